package matrix_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// testDB opens a fresh SQLite database for one test.
func testDB(t testing.TB) *dbutil.Database {
	t.Helper()
	db, err := matrix.OpenDatabase(context.Background(), filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// quietLogger discards logs unless the test runs with -v.
func quietLogger(t testing.TB) *slog.Logger {
	return logtest.Verbose(t, slog.LevelDebug)
}

// newClient registers localpart on srv and returns a samtal client logged in with its
// password, on its own database, closed when the test ends (matrixtest's NewClient).
func newClient(t testing.TB, srv *matrixtest.Server, localpart string) *matrix.Client {
	t.Helper()
	return srv.NewClient(t, localpart, matrixtest.WithLogger(quietLogger(t)))
}

// newClientWith returns a client for opts (filling in a logger), closed when the test ends.
func newClientWith(t testing.TB, opts matrix.Options) *matrix.Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger(t)
	}
	c, err := matrix.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("matrix.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
