package matrix_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSyncStopsWhileRequestHeld: a Syncer whose request the homeserver does not answer (a slow
// or hung server) returns from Run once its context is cancelled, whichever request it is in:
// the sync itself, the joined-rooms look-up before a first sync with ReplayHistory, mautrix's
// wait before retrying that look-up after a 503, or the /messages of a gap fill. A bot's
// shutdown must not wait for the homeserver. The fault is injected by a proxy that never
// answers the request (it lets go only when the client does) or answers it with 503; the bot's
// HTTP client has no timeout and mautrix's retry wait is five minutes, so a request that did
// not end with the context would hang Run. The wait after cancel is generous: it fails only on
// a hang, never on a slow machine.
func TestSyncStopsWhileRequestHeld(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "bot")
	alice := srv.Client(t, "alice")

	// Each answer gets the subtest's context: a hold must end with the subtest, or a Syncer that
	// does not stop would hang the subtest's cleanup (httptest.Server.Close) instead of failing it.
	hold := func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done(): // the client gave up
		case <-ctx.Done():
		}
	}
	unavailable := func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"injected: try again later"}`))
	}
	for _, tc := range []struct {
		name    string
		path    string // the request the proxy intercepts
		answer  func(ctx context.Context, w http.ResponseWriter, r *http.Request)
		replay  bool // SyncOptions.ReplayHistory
		limited bool // mark later sync timelines limited, so that the Syncer fills the gap
	}{
		{name: "sync", path: "/_matrix/client/v3/sync", answer: hold},
		{name: "joined rooms", path: "/_matrix/client/v3/joined_rooms", answer: hold, replay: true},
		{name: "joined rooms retry wait", path: "/_matrix/client/v3/joined_rooms", answer: unavailable, replay: true},
		{name: "gap fill", path: "/messages", answer: hold, limited: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := srv.URL
			if tc.limited {
				sp := newSyncProxy(t, srv)
				sp.setRewrite(func(ctx context.Context, since string, resp *mautrix.RespSync) bool {
					if since == "" {
						return false // the first sync fills no gaps
					}
					for _, r := range resp.Rooms.Join {
						if len(r.Timeline.Events) > 0 {
							r.Timeline.Limited = true
							if r.Timeline.PrevBatch == "" {
								r.Timeline.PrevBatch = since // never sent on: the proxy holds /messages
							}
						}
					}
					return false
				})
				upstream = sp.URL
			}
			intercepted := make(chan struct{})
			var once sync.Once
			proxy := newInterceptProxy(t, upstream, func(r *http.Request) http.HandlerFunc {
				if !strings.HasSuffix(r.URL.Path, tc.path) {
					return nil
				}
				once.Do(func() { close(intercepted) })
				return func(w http.ResponseWriter, r *http.Request) { tc.answer(t.Context(), w, r) }
			})
			bot := newClientWith(t, matrix.Options{HomeserverURL: proxy, Login: matrix.Password("bot", password), DB: testDB(t),
				HTTPClient: &http.Client{}}) // no timeout: only the context ends a request
			bot.Mautrix().DefaultHTTPBackoff = 5 * time.Minute
			var room id.RoomID
			if tc.limited {
				room = syncRoom(t, alice, bot)
			}

			s := bot.NewSyncer(matrix.SyncOptions{Timeout: time.Second, ReplayHistory: tc.replay})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			if tc.limited {
				syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
				mustSend(t, alice, room, "into the gap")
			}
			select {
			case <-intercepted:
			case err := <-done:
				t.Fatalf("Syncer.Run returned before the request was held: %v", err)
			case <-time.After(matrixtest.WaitTimeout):
				t.Fatalf("the Syncer never asked for %s", tc.path)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Syncer.Run after cancel: %v, want nil", err)
				}
			case <-time.After(matrixtest.WaitTimeout):
				t.Fatalf("Syncer.Run did not return after cancel while %s was held", tc.path)
			}
		})
	}
}

// newInterceptProxy forwards requests to upstream, except those for which intercept returns
// a handler: that handler answers them instead. It returns the proxy's URL.
func newInterceptProxy(t *testing.T, upstream string, intercept func(*http.Request) http.HandlerFunc) string {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := intercept(r); h != nil {
			h(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}
