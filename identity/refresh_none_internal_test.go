package identity

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/matrix"
)

// countingLog counts the database's queries that read the OAuth sessions.
type countingLog struct {
	dbutil.DatabaseLogger
	loads atomic.Int64
}

func (l *countingLog) QueryTiming(_ context.Context, _, query string, _ []any, _ int, _ time.Duration, _ error) {
	if strings.Contains(query, "FROM samtal_identity_oauth") {
		l.loads.Add(1)
	}
}

// TestTransportPasswordSessionReadsOnce: a Transport in front of a session that is not an
// OAuth one (a password login: no record stored) passes its requests through, and reads the
// database for a record once per noneRecheck, not on every request. Before, each request of a
// password session (every send and sync of the mail gateway) read it. A record stored later
// is found once noneRecheck has passed.
func TestTransportPasswordSessionReadsOnce(t *testing.T) {
	ctx := t.Context()
	db, err := matrix.OpenDatabase(ctx, filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var seen atomic.Value
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(hs.Close)
	now := time.Now()
	var clock atomic.Int64
	tr, err := NewTransport(ctx, db, "bot", TransportOptions{Now: func() time.Time { return now.Add(time.Duration(clock.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	log := &countingLog{DatabaseLogger: dbutil.NoopLogger}
	db.Log = log
	get := func() {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/_matrix/client/v3/sync", nil)
		req.Header.Set("Authorization", "Bearer password-session-token")
		resp, err := tr.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := seen.Load(); got != "Bearer password-session-token" {
			t.Fatalf("the homeserver got Authorization %q, want the request's own", got)
		}
	}
	for range 20 {
		get()
	}
	if n := log.loads.Load(); n != 1 {
		t.Errorf("20 requests read the OAuth sessions %d times, want 1", n)
	}
	clock.Store(int64(noneRecheck))
	get()
	if n := log.loads.Load(); n != 2 {
		t.Errorf("after %v the OAuth sessions were read %d times in all, want 2", noneRecheck, n)
	}
}
