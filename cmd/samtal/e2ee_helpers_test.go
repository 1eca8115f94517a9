package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// reader is another person's encrypting client, with a Syncer recording what it reads.
type reader struct {
	*matrix.Client
	m    *e2ee.Machine
	mu   sync.Mutex
	msgs []*matrix.Event
}

func encryptedReader(t *testing.T, srv *matrixtest.Server, localpart string) *reader {
	t.Helper()
	return encryptedReaderWith(t, srv, localpart, nil)
}

// encryptedReaderWith is encryptedReader that also answers verification as vopts say.
func encryptedReaderWith(t *testing.T, srv *matrixtest.Server, localpart string, vopts *e2ee.VerifyOptions) *reader {
	t.Helper()
	_, pw := srv.RegisterUser(t, localpart)
	db, err := matrix.OpenDatabase(t.Context(), filepath.Join(t.TempDir(), localpart+".db"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password(localpart, pw), DB: db, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e2ee.Enable(t.Context(), c, e2ee.Options{PickleKey: []byte("reader pickle key of 32 bytes...")})
	if err != nil {
		t.Fatal(err)
	}
	if vopts != nil {
		if err := m.EnableVerification(t.Context(), *vopts); err != nil {
			t.Fatal(err)
		}
	}
	r := &reader{Client: c, m: m}
	s := c.NewSyncer(matrix.SyncOptions{Timeout: time.Second})
	s.OnMessage(func(_ context.Context, evt *matrix.Event) error {
		r.mu.Lock()
		r.msgs = append(r.msgs, evt)
		r.mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; m.Close(); c.Close(); db.Close() })
	return r
}

func (r *reader) wait(t *testing.T, body string) *matrix.Event {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r.mu.Lock()
		for _, e := range r.msgs {
			if e.Text() == body {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
	}
	t.Fatalf("%s never read %q", r.UserID(), body)
	return nil
}
