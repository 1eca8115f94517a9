package mailbridge_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// processScene is the stage of a test that kills a gateway process with SIGKILL: a homeserver,
// the bot's account "mailbot", an officer who has joined the bot's room for
// cases@agency.example and records it, and the environment a gateway process (this test
// binary running a helper test, which calls processGateway) needs to serve that room.
type processScene struct {
	srv     *matrixtest.Server
	officer *matrix.Client
	room    id.RoomID
	inbox   *matrixtest.Recorder
	dir     string   // the processes' directory: the gateway's database, and what they write
	env     []string // the gateway process's environment
}

// newProcessScene sets the stage; helperEnv is the variable that tells the helper test to run.
func newProcessScene(t *testing.T, helperEnv string) *processScene {
	t.Helper()
	s := &processScene{srv: matrixtest.NewServer(t), dir: t.TempDir()}
	_, password := s.srv.RegisterUser(t, "mailbot")
	setup := s.srv.NewClient(t, "mailbot")
	s.officer = s.srv.NewClient(t, "officer")
	s.room = roomWith(t, setup, s.officer, false)
	s.inbox = matrixtest.NewRecorder(t, s.officer, s.room)
	s.env = append(os.Environ(), helperEnv+"=1", "GATEWAY_DB="+filepath.Join(s.dir, "gateway.db"),
		"GATEWAY_HS="+s.srv.URL, "GATEWAY_PASSWORD="+password, "GATEWAY_ROOM="+string(s.room))
	return s
}

// start runs the helper test named helper in a process of its own, with the scene's
// environment and more. No process outlives the test.
func (s *processScene) start(t *testing.T, helper string, more ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(s.env[:len(s.env):len(s.env)], more...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// processGateway, in the helper process, makes the gateway of its processScene: the bot's
// client on the gateway's database, with a fast outbox, and a gateway for the room with opts
// (its Client, Router, Logger and retry delays set here).
func processGateway(t *testing.T, opts mailbridge.Options) *mailbridge.Gateway {
	t.Helper()
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, os.Getenv("GATEWAY_DB"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: os.Getenv("GATEWAY_HS"),
		Login:         matrix.Password("mailbot", os.Getenv("GATEWAY_PASSWORD")),
		DB:            db,
		Logger:        quiet,
		// ResumeDelay stays at its default: Dendrite may store the event of a send whose client
		// was killed mid-request after logging the request as failed ("context canceled"), and
		// a restarted gateway that looked for it after 200 ms posted a mail twice (1 run in 40).
		Outbox: matrix.OutboxOptions{MinRetryDelay: 20 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: os.Getenv("GATEWAY_ROOM")})
	if err != nil {
		t.Fatal(err)
	}
	opts.Client, opts.Router, opts.Logger = c, router, quiet
	opts.MinRetryDelay, opts.MaxRetryDelay = 50*time.Millisecond, 500*time.Millisecond
	g, err := mailbridge.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
