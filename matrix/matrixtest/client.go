package matrixtest

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
)

// setupTimeout bounds the login and the start of encryption of one NewClient.
const setupTimeout = time.Minute

// ClientOption configures a client made by Server.NewClient.
type ClientOption func(*clientConfig)

type clientConfig struct {
	encryption  *e2ee.Options
	onEncrypted func(*e2ee.Machine) error
	logger      *slog.Logger
	outbox      matrix.OutboxOptions
	caseACL     matrix.ServerACLSource
}

// Encrypted turns on end-to-end encryption with a random pickle key, so that the client sends
// into encrypted rooms and its Syncer decrypts. Its crypto store is in the client's database.
func Encrypted() ClientOption {
	return EncryptedWith(e2ee.Options{})
}

// EncryptedWith is Encrypted with options, such as a trust policy. A nil PickleKey is a random
// one.
func EncryptedWith(opts e2ee.Options) ClientOption {
	return func(c *clientConfig) { c.encryption = &opts }
}

// OnEncrypted turns on encryption, as Encrypted does unless EncryptedWith chose options, and
// calls fn with the client's e2ee.Machine once it is enabled: to bootstrap cross-signing, to
// answer verification, or to keep the machine. An error from fn fails the test.
func OnEncrypted(fn func(m *e2ee.Machine) error) ClientOption {
	return func(c *clientConfig) {
		if c.encryption == nil {
			c.encryption = &e2ee.Options{}
		}
		c.onEncrypted = fn
	}
}

// WithLogger gives the client a logger. By default clients log into the test's output, which
// is shown when the test fails or runs with -v.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// WithOutbox sets the client's outbox options.
func WithOutbox(opts matrix.OutboxOptions) ClientOption {
	return func(c *clientConfig) { c.outbox = opts }
}

// WithCaseRoomACL gives the client a source of server ACLs for its case rooms
// (matrix.Options.CaseRoomACL), such as a federation.Watcher.
func WithCaseRoomACL(src matrix.ServerACLSource) ClientOption {
	return func(c *clientConfig) { c.caseACL = src }
}

// NewClient returns a samtal client logged in as localpart by password, on a new device with a
// database of its own in tb.TempDir(), closed when the test ends. The user is registered
// first if this Server has not registered it yet.
//
// Use it for the party a test is about; Client's raw mautrix client is the independent other
// side, which sees what reached the homeserver and nothing of samtal.
func (s *Server) NewClient(tb testing.TB, localpart string, opts ...ClientOption) *matrix.Client {
	tb.Helper()
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = testLogger(tb).With("client", localpart)
	}
	password := s.password(tb, localpart)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	db, err := matrix.OpenDatabase(ctx, filepath.Join(tb.TempDir(), localpart+".db"))
	if err != nil {
		tb.Fatalf("matrixtest: database for %s: %v", localpart, err)
	}
	tb.Cleanup(func() { db.Close() })
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: s.URL,
		Login:         matrix.Password(localpart, password),
		DB:            db,
		DeviceName:    "matrixtest",
		Logger:        cfg.logger,
		Outbox:        cfg.outbox,
		CaseRoomACL:   cfg.caseACL,
	})
	if err != nil {
		tb.Fatalf("matrixtest: client for %s: %v", localpart, err)
	}
	tb.Cleanup(func() { c.Close() })
	if cfg.encryption == nil {
		return c
	}
	eo := *cfg.encryption
	if eo.PickleKey == nil {
		eo.PickleKey = make([]byte, 32)
		_, _ = rand.Read(eo.PickleKey)
	}
	m, err := e2ee.Enable(ctx, c, eo)
	if err != nil {
		tb.Fatalf("matrixtest: encryption for %s: %v", localpart, err)
	}
	tb.Cleanup(func() { m.Close() })
	if cfg.onEncrypted != nil {
		if err := cfg.onEncrypted(m); err != nil {
			tb.Fatalf("matrixtest: %s: %v", localpart, err)
		}
	}
	return c
}

// password returns localpart's password, registering the user first if needed.
func (s *Server) password(tb testing.TB, localpart string) string {
	tb.Helper()
	s.mu.Lock()
	password, known := s.passwords[localpart]
	s.mu.Unlock()
	if !known {
		_, password = s.register(tb, localpart)
	}
	return password
}

// testLogger writes into the test's output, shown when the test fails or with -v, until the
// test's cleanup (registered first, so it runs after the client's Close): a late line of a
// stopping client is dropped, not written after the test ended.
func testLogger(tb testing.TB) *slog.Logger {
	w := &testWriter{out: tb.Output()}
	tb.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.out = nil
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	mu  sync.Mutex
	out io.Writer // nil once the test ended
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		_, _ = w.out.Write(p)
	}
	return len(p), nil
}
