package matrix

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// testAccount is a user registered on a test server with a database of its own, for the
// package's internal tests; open makes a client for it (again, after a "restart").
type testAccount struct {
	t        *testing.T
	srv      *matrixtest.Server
	password string
	dbPath   string
}

func newTestAccount(t *testing.T, srv *matrixtest.Server, localpart string) *testAccount {
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
