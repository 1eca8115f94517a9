package matrixtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/homeserver"
)

// startTimeout bounds one start of the homeserver once its binary exists. The first use on a
// machine builds Dendrite, which FindDendrite bounds by the test's own deadline instead.
const startTimeout = 2 * time.Minute

// logLinesOnFailure is how much of the server log a failed test prints.
const logLinesOnFailure = 150

// Server is a real Dendrite homeserver on a loopback port, started for one test.
type Server struct {
	// URL is the base URL of the client-server API, such as http://127.0.0.1:41234.
	URL string
	// ServerName is the homeserver's name: "localhost", or "localhost:PORT" in a federation.
	ServerName string

	hs *homeserver.Homeserver

	mu        sync.Mutex
	passwords map[string]string // localpart -> password, for users registered here
}

// Option configures a Server.
type Option func(*config)

type config struct {
	opts          homeserver.Options
	appRegs       []*appservice.Registration
	distinctHosts bool // NewFederation: a.localhost, b.localhost, ... (DistinctHosts)
}

// WithRateLimit turns on Dendrite's rate limiter: a burst of threshold requests, then cooloff
// between requests. Servers have it off by default so that tests are not slowed down by it.
func WithRateLimit(threshold int, cooloff time.Duration) Option {
	return func(c *config) {
		c.opts.RateLimit = &homeserver.RateLimit{Threshold: threshold, Cooloff: cooloff}
	}
}

// WithAppService loads an appservice registration, so that the appservice can log in as its
// users with m.login.application_service and act for them with its as_token.
func WithAppService(reg *appservice.Registration) Option {
	return func(c *config) { c.appRegs = append(c.appRegs, reg) }
}

// WithMaxUpload sets the largest media upload the server accepts, in bytes (default 100 MiB).
func WithMaxUpload(bytes int64) Option {
	return func(c *config) { c.opts.MaxUpload = bytes }
}

// NewServer starts a Dendrite homeserver for the test and stops it when the test ends, with its
// data in a temporary directory (in /dev/shm where the machine has one: stopping and restarting
// the server keeps it, a reboot does not). If the test fails, the end of the server's log is
// printed.
//
// The binary is $SAMTAL_DENDRITE, else dendrite on PATH, else one built once (with `go install`,
// into the user cache directory) and reused by every later test on the machine.
func NewServer(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	return newServer(tb, false, opts)
}

func newServer(tb testing.TB, federation bool, opts []Option) *Server {
	tb.Helper()
	dir := dataDir(tb)
	c := config{opts: homeserver.Options{Dir: dir, Federation: federation, Logf: tb.Logf}}
	for _, o := range opts {
		o(&c)
	}
	for i, reg := range c.appRegs {
		path := filepath.Join(dir, fmt.Sprintf("appservice-%d.yaml", i))
		if err := reg.Save(path); err != nil {
			tb.Fatalf("matrixtest: write appservice registration: %v", err)
		}
		c.opts.AppServices = append(c.opts.AppServices, path)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		tb.Fatal(err)
	}
	c.opts.Dir = filepath.Join(dir, "data")

	ctx, cancel := testContext(tb)
	defer cancel()
	hs, err := homeserver.Start(ctx, c.opts)
	if err != nil {
		tb.Fatalf("matrixtest: %v", err)
	}
	s := &Server{URL: hs.URL(), ServerName: hs.ServerName(), hs: hs, passwords: map[string]string{}}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("matrixtest: last lines of the log of %s (%s):\n%s", s.ServerName, s.URL, hs.Log(logLinesOnFailure))
		}
		// Killed, not stopped: its data goes with the test, and a graceful stop took a tenth
		// of a second of every test.
		if err := hs.Kill(); err != nil {
			tb.Errorf("matrixtest: stop %s: %v", s.ServerName, err)
		}
	})
	return s
}

// testContext bounds a start by the test's deadline, when it has one, and by startTimeout
// once the binary is there (the cold build is bounded by the test deadline alone).
func testContext(tb testing.TB) (context.Context, context.CancelFunc) {
	ctx := context.Background()
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return context.WithDeadline(ctx, dl)
		}
	}
	return context.WithCancel(ctx)
}

// RegisterUser creates a user with a random password through the shared-secret registration
// API and returns its user ID and password.
func (s *Server) RegisterUser(tb testing.TB, localpart string) (id.UserID, string) {
	tb.Helper()
	reg, password := s.register(tb, localpart)
	return reg.UserID, password
}

// RegisterAdmin is RegisterUser for a server administrator, who may call the server's admin
// API (Dendrite's /_dendrite/admin/...). Client and NewClient log in as it afterwards.
func (s *Server) RegisterAdmin(tb testing.TB, localpart string) (id.UserID, string) {
	tb.Helper()
	reg, password := s.registerAs(tb, localpart, true)
	return reg.UserID, password
}

func (s *Server) register(tb testing.TB, localpart string) (*homeserver.Registration, string) {
	tb.Helper()
	return s.registerAs(tb, localpart, false)
}

func (s *Server) registerAs(tb testing.TB, localpart string, admin bool) (*homeserver.Registration, string) {
	tb.Helper()
	password := "pw-" + randomHex(12)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := s.hs.Register(ctx, localpart, password, admin)
	if err != nil {
		tb.Fatalf("matrixtest: %v", err)
	}
	s.mu.Lock()
	s.passwords[localpart] = password
	s.mu.Unlock()
	return reg, password
}

// Client returns a mautrix client logged in as localpart, on a new device. The user is
// registered first if this Server has not registered it yet.
func (s *Server) Client(tb testing.TB, localpart string) *mautrix.Client {
	tb.Helper()
	s.mu.Lock()
	password, known := s.passwords[localpart]
	s.mu.Unlock()
	if !known {
		reg, _ := s.register(tb, localpart)
		return s.newClient(tb, reg.UserID, reg.DeviceID, reg.AccessToken)
	}
	cli := s.newClient(tb, "", "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		tb.Fatalf("matrixtest: log in as %s: %v", localpart, err)
	}
	return cli
}

func (s *Server) newClient(tb testing.TB, user id.UserID, device id.DeviceID, token string) *mautrix.Client {
	tb.Helper()
	cli, err := mautrix.NewClient(s.URL, user, token)
	if err != nil {
		tb.Fatalf("matrixtest: %v", err)
	}
	cli.DeviceID = device
	cli.Log = zerolog.Nop()
	return cli
}

// UserID returns the full user ID of localpart on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.ServerName)
}

// Stop stops the homeserver, as an outage would; Start brings it back with the same data on the
// same address. A server the test leaves stopped stays stopped.
func (s *Server) Stop() error { return s.hs.Stop() }

// Kill stops the homeserver with SIGKILL, as a crash would.
func (s *Server) Kill() error { return s.hs.Kill() }

// Start starts a stopped homeserver again, with the same data on the same address.
func (s *Server) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	err := s.hs.Start(ctx)
	if errors.Is(err, homeserver.ErrPortInUse) {
		return fmt.Errorf("matrixtest: restart %s: its port was taken while it was stopped: %w", s.ServerName, err)
	}
	return err
}

// Running reports whether the homeserver process is running.
func (s *Server) Running() bool { return s.hs.Running() }

// Log returns the last n lines of the server's log.
func (s *Server) Log(n int) string { return s.hs.Log(n) }

// FederationAddr is the loopback address of a federating server's HTTPS listener, such as
// 127.0.0.1:41234; "" for a server of NewServer.
func (s *Server) FederationAddr() string { return s.hs.FederationAddr() }

// TLSCertFile is the path of a federating server's self-signed certificate (PEM), valid for
// its host name, for a test that checks the server with TLS validation.
func (s *Server) TLSCertFile() string { return s.hs.TLSCertFile() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}

// dataDir is the server's directory: in /dev/shm where the machine has it, else in
// tb.TempDir(). A test homeserver's durability is not what tests check (stopping and
// restarting the process keeps its files either way), and on a disk Dendrite's own fsyncs
// take a third of every send's time, which made every test that sends slower and every
// benchmark against the server measure the disk.
func dataDir(tb testing.TB) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "samtal-matrixtest-"); err == nil {
			tb.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}
