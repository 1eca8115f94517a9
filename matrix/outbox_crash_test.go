package matrix_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The crash test re-executes this test binary as the process that sends; init runs it before
// the testing framework starts.
const envOutboxChild = "SAMTAL_TEST_OUTBOX_CHILD"

func init() {
	if os.Getenv(envOutboxChild) == "" {
		return
	}
	if err := outboxChild(); err != nil {
		fmt.Fprintln(os.Stderr, "outbox child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// outboxChild sends notification 0..n-1 into each room, with an idempotency key per
// notification, so that a run after a crash stores only what the crashed run had not.
func outboxChild() error {
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, os.Getenv("CHILD_DB"))
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: os.Getenv("CHILD_URL"),
		Login:         matrix.Password(os.Getenv("CHILD_USER"), os.Getenv("CHILD_PASSWORD")),
		DB:            db,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Outbox:        matrix.OutboxOptions{MaxRetryDelay: time.Second, LeaseDuration: childLease()},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	n, _ := strconv.Atoi(os.Getenv("CHILD_N"))
	rooms := strings.Split(os.Getenv("CHILD_ROOMS"), ",")
	var pending []*matrix.Pending
	for i := range n {
		for _, r := range rooms {
			p, err := c.Send(ctx, id.RoomID(r), matrix.Notice(notification(i)), matrix.SendOptions{IdempotencyKey: fmt.Sprintf("%s/%d", r, i)})
			if err != nil {
				return err
			}
			pending = append(pending, p)
		}
	}
	for _, p := range pending {
		if _, err := p.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// childLease is the lease of the child's outbox, from CHILD_LEASE (0: the default).
func childLease() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("CHILD_LEASE"))
	return d
}

func notification(i int) string { return fmt.Sprintf("notification %04d", i) }

// TestOutboxCrash: a process sends 1000 notifications across 10 rooms and is killed with
// SIGKILL at random points, several times; after it finally runs to the end, each room holds
// each notification exactly once, in order.
func TestOutboxCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: kills a sending process 4 times over 1000 sends (about 20 s)")
	}
	const rooms, perRoom, kills = 10, 100, 4
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "casebot")
	bot := srv.Client(t, "casebot")
	reader := srv.Client(t, "reader")
	var ids []string
	for range rooms {
		resp, err := bot.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{reader.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reader.JoinRoomByID(t.Context(), resp.RoomID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(resp.RoomID))
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		envOutboxChild+"=1",
		"CHILD_DB="+filepath.Join(t.TempDir(), "outbox.db"),
		"CHILD_URL="+srv.URL,
		"CHILD_USER=casebot",
		"CHILD_PASSWORD="+password,
		"CHILD_N="+strconv.Itoa(perRoom),
		"CHILD_ROOMS="+strings.Join(ids, ","),
	)
	run := func(killAfter time.Duration) (killed bool) {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if killAfter > 0 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("child failed before the kill: %v\n%s", err, stderr.String())
				}
				return false // finished before we got to kill it
			case <-time.After(killAfter):
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-done
				return true
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("final run failed: %v\n%s", err, stderr.String())
			}
		case <-time.After(5 * time.Minute):
			_ = cmd.Process.Kill()
			t.Fatal("final run did not finish in 5 minutes")
		}
		return false
	}
	killedCount := 0
	for range kills {
		if run(time.Duration(300+rand.IntN(1500)) * time.Millisecond) {
			killedCount++
		}
	}
	run(0)
	if killedCount == 0 {
		t.Fatal("the sender was never killed mid-run; the test proved nothing")
	}
	t.Logf("sender killed %d times", killedCount)

	var want []string
	for i := range perRoom {
		want = append(want, notification(i))
	}
	for _, r := range ids {
		assertPosted(t, reader, id.RoomID(r), bot.UserID, want)
	}
}

// TestOutboxTwoProcesses: two processes share one session on PostgreSQL and send the same
// 1000 notifications over 10 rooms (each stores what the other has not); one is killed with
// SIGKILL part way. The rooms are shared through leases, and the survivor takes over the dead
// one's rooms when its leases run out: each notification arrives exactly once, in order.
// Before, both processes worked the same pending rows.
func TestOutboxTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: two sending processes on PostgreSQL, one killed (about 30 s)")
	}
	const rooms, perRoom = 10, 100
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "casebot")
	bot := srv.Client(t, "casebot")
	reader := srv.Client(t, "reader")
	var ids []string
	for range rooms {
		resp, err := bot.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{reader.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reader.JoinRoomByID(t.Context(), resp.RoomID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(resp.RoomID))
	}
	dsn := pgtest.New(t)
	// One session: logged in once, then used by both processes.
	db, err := matrix.OpenDatabase(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	first := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("casebot", password), DB: db})
	first.Close()
	db.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, chan error, *strings.Builder) {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(),
			envOutboxChild+"=1",
			"CHILD_DB="+dsn,
			"CHILD_URL="+srv.URL,
			"CHILD_USER=casebot",
			"CHILD_PASSWORD="+password,
			"CHILD_N="+strconv.Itoa(perRoom),
			"CHILD_ROOMS="+strings.Join(ids, ","),
			"CHILD_LEASE=2s",
		)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, done, &stderr
	}
	_, survivorDone, survivorErr := start()
	victim, victimDone, _ := start()
	select {
	case <-victimDone:
		t.Fatal("the process to kill finished before it was killed; the test proved nothing")
	case <-time.After(time.Duration(1500+rand.IntN(2000)) * time.Millisecond):
		_ = victim.Process.Signal(syscall.SIGKILL)
		<-victimDone
	}
	select {
	case err := <-survivorDone:
		if err != nil {
			t.Fatalf("the surviving process failed: %v\n%s", err, survivorErr.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the surviving process did not finish in 5 minutes")
	}
	var want []string
	for i := range perRoom {
		want = append(want, notification(i))
	}
	for _, r := range ids {
		assertPosted(t, reader, id.RoomID(r), bot.UserID, want)
	}
}
