package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/internal/logtest"
)

// TestRefused: each bad list is refused with its own error, the last good list stays in use
// (and in the cache), and a log line and the metric hook say so.
func TestRefused(t *testing.T) {
	key := newKey(t)
	good := sign(t, doc(5, "a.example", "b.example"), key)

	expired := doc(6, "a.example", "b.example", "c.example")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	future := doc(6, "a.example", "c.example")
	future.IssuedAt = time.Now().Add(time.Hour)

	tampered := sign(t, doc(6, "a.example", "b.example"), key)
	parts := strings.Split(string(tampered), ".")
	// Swap the payload for another list's, keeping the signature: b.example becomes evil.example.
	other := strings.Split(string(sign(t, doc(6, "a.example", "evil.example"), key)), ".")
	tampered = []byte(parts[0] + "." + other[1] + "." + parts[2])

	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		body   func(ls *listServer) []byte
		want   error
		reason string
	}{
		{"tampered", func(*listServer) []byte { return tampered }, federation.ErrSignature, "signature"},
		{"other key", func(*listServer) []byte { return sign(t, doc(6, "a.example"), newKey(t)) }, federation.ErrSignature, "signature"},
		{"other algorithm (ES256 instead of EdDSA)", func(*listServer) []byte { return sign(t, doc(6, "a.example"), p256) }, federation.ErrSignature, "signature"},
		{"not a JWS", func(*listServer) []byte { return []byte(`{"version":7,"members":[]}`) }, federation.ErrSignature, "signature"},
		{"expired", func(*listServer) []byte { return sign(t, expired, key) }, federation.ErrExpired, "expired"},
		{"issued in the future", func(*listServer) []byte { return sign(t, future, key) }, federation.ErrNotYetValid, "not_yet_valid"},
		{"lower version", func(*listServer) []byte { return sign(t, doc(4, "a.example", "c.example"), key) }, federation.ErrOlderVersion, "older_version"},
		{"same version, other content", func(*listServer) []byte { return sign(t, doc(5, "a.example", "c.example"), key) }, federation.ErrOlderVersion, "older_version"},
		{"list server down", func(ls *listServer) []byte { ls.Close(); return nil }, federation.ErrUnavailable, "unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := newListServer(t, good)
			cache := filepath.Join(t.TempDir(), "list.jws")
			var logs logtest.Buffer
			var reasons []string
			w, err := federation.NewWatcher(ls.URL, key.Public(), federation.Options{
				CacheFile: cache, Logger: logs.Logger(),
				OnRefresh: func(err error) { reasons = append(reasons, federation.Reason(err)) },
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := w.Refresh(ctx); err != nil {
				t.Fatalf("first refresh: %v", err)
			}
			if body := tc.body(ls); body != nil {
				ls.publish(body)
			}

			err = w.Refresh(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Refresh = %v, want %v", err, tc.want)
			}
			if l := w.Current(); l == nil || l.Version() != 5 || l.HasServer("c.example") || l.HasServer("evil.example") {
				t.Fatalf("the last good list was not kept: %+v", l)
			}
			if got := strings.Join(reasons, ","); got != ","+tc.reason {
				t.Errorf("OnRefresh reasons %q, want %q", got, ","+tc.reason)
			}
			if s := w.Stats(); s.Failures != 1 || s.Refreshes != 2 || s.Version != 5 {
				t.Errorf("Stats = %+v", s)
			}
			if log := logs.String(); !strings.Contains(log, "keeping the last good list") || !strings.Contains(log, "kept_version=5") || !strings.Contains(log, "reason="+tc.reason) {
				t.Errorf("no log line saying so:\n%s", log)
			}
			// The cache still holds the good list: a restart uses it.
			w2, err := federation.NewWatcher(ls.URL, key.Public(), federation.Options{CacheFile: cache, Logger: logs.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			if l := w2.Current(); l == nil || l.Version() != 5 {
				t.Errorf("after a restart the cached list is %+v, want version 5", l)
			}
		})
	}
}

// TestTooLarge: a 50 MB document is refused after reading at most MaxSize of it, with or
// without a Content-Length; the last good list is kept.
func TestTooLarge(t *testing.T) {
	key := newKey(t)
	good := sign(t, doc(1, "a.example"), key)
	const size = 50 << 20
	for _, announce := range []bool{true, false} {
		t.Run(fmt.Sprintf("content-length %v", announce), func(t *testing.T) {
			var huge atomic.Bool
			var written atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !huge.Load() {
					_, _ = w.Write(good)
					return
				}
				if announce {
					w.Header().Set("Content-Length", fmt.Sprint(size))
				}
				chunk := make([]byte, 64<<10)
				for i := range chunk {
					chunk[i] = 'A'
				}
				for written.Load() < size {
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			w, err := federation.NewWatcher(srv.URL, key.Public(), federation.Options{Logger: (&logtest.Buffer{}).Logger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			huge.Store(true)
			err = w.Refresh(context.Background())
			if !errors.Is(err, federation.ErrTooLarge) {
				t.Fatalf("Refresh = %v, want ErrTooLarge", err)
			}
			if w.Current().Version() != 1 {
				t.Error("last good list not kept")
			}
			srv.CloseClientConnections()
			// The server may have pushed some megabytes into socket buffers, never all 50.
			if n := written.Load(); n >= size {
				t.Errorf("the whole document was read (%d bytes)", n)
			}
		})
	}
}

// TestTooManyMembers: a list over MaxMembers is refused.
func TestTooManyMembers(t *testing.T) {
	key := newKey(t)
	var servers []string
	for i := range 11 {
		servers = append(servers, fmt.Sprintf("s%d.example", i))
	}
	ls := newListServer(t, sign(t, doc(1, servers...), key))
	_, err := federation.Load(context.Background(), ls.URL, key.Public(), federation.Options{MaxMembers: 10, Logger: (&logtest.Buffer{}).Logger()})
	if !errors.Is(err, federation.ErrTooLarge) {
		t.Fatalf("Load = %v, want ErrTooLarge", err)
	}
}

// TestNewerListAndCache: a newer list replaces the old one, OnChange hears of it, the cache
// file is owner-only, and a restart with the list server down uses the cached list.
func TestNewerListAndCache(t *testing.T) {
	key := newKey(t)
	ls := newListServer(t, sign(t, doc(1, "a.example", "b.example"), key))
	cache := filepath.Join(t.TempDir(), "list.jws")
	var changes []string
	opts := federation.Options{
		CacheFile: cache, Logger: (&logtest.Buffer{}).Logger(),
		OnChange: func(_ context.Context, old, new *federation.List) {
			v := uint64(0)
			if old != nil {
				v = old.Version()
			}
			changes = append(changes, fmt.Sprintf("%d->%d", v, new.Version()))
		},
	}
	l, err := federation.Load(context.Background(), ls.URL, key.Public(), opts)
	if err != nil || l.Version() != 1 {
		t.Fatalf("Load = %v, %v", l, err)
	}
	w, err := federation.NewWatcher(ls.URL, key.Public(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(context.Background()); err != nil { // the same list again: no change
		t.Fatal(err)
	}
	ls.publish(sign(t, doc(2, "a.example", "b.example", "c.example"), key))
	if err := w.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(changes, " "); got != "0->1 1->2" {
		t.Errorf("OnChange calls %q, want %q", got, "0->1 1->2")
	}
	fi, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", fi.Mode().Perm())
	}

	ls.Close()
	l, err = federation.Load(context.Background(), ls.URL, key.Public(), federation.Options{CacheFile: cache, Logger: (&logtest.Buffer{}).Logger()})
	if !errors.Is(err, federation.ErrUnavailable) {
		t.Errorf("Load with the server down = %v, want ErrUnavailable", err)
	}
	if l == nil || l.Version() != 2 || !l.HasServer("c.example") {
		t.Fatalf("Load with the server down gave %+v, want the cached version 2", l)
	}

	// A tampered cache is not used: there is no list, and nothing is allowed.
	raw, _ := os.ReadFile(cache)
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(cache, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err = federation.NewWatcher(ls.URL, key.Public(), federation.Options{CacheFile: cache, Logger: (&logtest.Buffer{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if w.Current() != nil || w.HasServer("a.example") || w.HasDomain("a.example") {
		t.Error("a tampered cache was used")
	}
	if _, err := w.ServerACL(); !errors.Is(err, federation.ErrNoList) {
		t.Errorf("ServerACL without a list = %v, want ErrNoList", err)
	}
}

// TestRun: Run fetches at once and on its schedule, and stops with its context.
func TestRun(t *testing.T) {
	key := newKey(t)
	ls := newListServer(t, sign(t, doc(1, "a.example"), key))
	changed := make(chan uint64, 4)
	w, err := federation.NewWatcher(ls.URL, key.Public(), federation.Options{
		Refresh: 20 * time.Millisecond, Logger: (&logtest.Buffer{}).Logger(),
		OnChange: func(_ context.Context, _, new *federation.List) { changed <- new.Version() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	if v := <-changed; v != 1 {
		t.Fatalf("first version %d", v)
	}
	ls.publish(sign(t, doc(2, "a.example", "b.example"), key))
	if v := <-changed; v != 2 {
		t.Fatalf("second version %d", v)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

func TestNewWatcherRefusesBadConfig(t *testing.T) {
	key := newKey(t)
	if _, err := federation.NewWatcher("ftp://x/list", key.Public(), federation.Options{}); err == nil {
		t.Error("ftp URL accepted")
	}
	if _, err := federation.NewWatcher("https://x/list", []byte("key"), federation.Options{}); err == nil {
		t.Error("a non-key accepted")
	}
}

// TestNilWatcher: a nil *Watcher, as a config without a list gives, knows nobody and no ACL,
// rather than panic where it is used as a matrix.ServerACLSource or a domain table.
func TestNilWatcher(t *testing.T) {
	var w *federation.Watcher
	if _, err := w.ServerACL(); !errors.Is(err, federation.ErrNoList) {
		t.Errorf("ServerACL of a nil Watcher: %v, want ErrNoList", err)
	}
	if w.HasDomain("a.example") || w.HasServer("a.example") {
		t.Error("a nil Watcher knows a member")
	}
	if _, ok := w.Member("a.example"); ok {
		t.Error("a nil Watcher has a member")
	}
}
