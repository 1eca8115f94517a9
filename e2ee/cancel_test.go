package e2ee_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestEnableCanceled: Enable whose context ends before the crypto store is set up (a process
// told to stop while it starts) returns the context's error. It panicked, in mautrix's
// CryptoHelper.Machine, when TestRestartNoUTD sent SIGTERM to a bot during Enable.
func TestEnableCanceled(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "bot")
	db, err := matrix.OpenDatabase(t.Context(), filepath.Join(t.TempDir(), "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("bot", pw), DB: db, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: testKey})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Enable with a canceled context: %v, want context.Canceled", err)
	}
	if m != nil {
		m.Close()
	}
}
