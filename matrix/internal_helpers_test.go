package matrix

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/homeserver"
)

// testServer is a Dendrite homeserver for the package's internal tests. They cannot use
// matrixtest, which imports this package (Go forbids the cycle in a package's own tests), so
// they start the homeserver through internal/homeserver, as matrixtest does underneath.
type testServer struct {
	URL        string
	ServerName string
	hs         *homeserver.Homeserver
}

// newTestServer starts a homeserver for the test and stops it when the test ends; the end of
// its log is printed when the test fails.
func newTestServer(t *testing.T) *testServer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hs, err := homeserver.Start(ctx, homeserver.Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("homeserver log:\n%s", hs.Log(150))
		}
		if err := hs.Stop(); err != nil {
			t.Errorf("stop homeserver: %v", err)
		}
	})
	return &testServer{URL: hs.URL(), ServerName: hs.ServerName(), hs: hs}
}

// RegisterUser creates a user with a random password and returns its ID and password.
func (s *testServer) RegisterUser(t *testing.T, localpart string) (id.UserID, string) {
	t.Helper()
	reg, pw := s.register(t, localpart)
	return reg.UserID, pw
}

func (s *testServer) register(t *testing.T, localpart string) (*homeserver.Registration, string) {
	t.Helper()
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	pw := "pw-" + hex.EncodeToString(b)
	reg, err := s.hs.Register(t.Context(), localpart, pw, false)
	if err != nil {
		t.Fatal(err)
	}
	return reg, pw
}

// Client registers localpart and returns a raw mautrix client logged in as it: the
// independent other party.
func (s *testServer) Client(t *testing.T, localpart string) *mautrix.Client {
	t.Helper()
	reg, _ := s.register(t, localpart)
	cli, err := mautrix.NewClient(s.URL, reg.UserID, reg.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = reg.DeviceID
	cli.Log = zerolog.Nop()
	return cli
}

// testAccount is a user registered on a test server with a database of its own, for the
// package's internal tests; open makes a client for it (again, after a "restart").
type testAccount struct {
	t        *testing.T
	srv      *testServer
	password string
	dbPath   string
}

func newTestAccount(t *testing.T, srv *testServer, localpart string) *testAccount {
	t.Helper()
	_, pw := srv.RegisterUser(t, localpart)
	return &testAccount{t: t, srv: srv, password: pw, dbPath: filepath.Join(t.TempDir(), localpart+".db")}
}

// open returns a client on the account's database, logged in by password the first time,
// closed with the test.
func (a *testAccount) open(outbox OutboxOptions) *Client {
	a.t.Helper()
	db, err := OpenDatabase(a.t.Context(), a.dbPath)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { db.Close() })
	localpart := filepath.Base(a.dbPath[:len(a.dbPath)-len(".db")])
	c, err := New(a.t.Context(), Options{HomeserverURL: a.srv.URL, Login: Password(localpart, a.password), DB: db,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Outbox: outbox})
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { c.Close() })
	return c
}
