package matrix_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy sits between a client and the real homeserver to inject what Dendrite will not
// produce on demand: rate limits on /send (Dendrite does not limit it), and a fixed delay on
// every round trip (a homeserver far away). It is a fault injector, not a fake: every request
// it lets through is answered by the real server.
type faultProxy struct {
	*httptest.Server
	delay     time.Duration
	limitEach int64 // answer every n-th /send with 429 M_LIMIT_EXCEEDED; 0 never
	sends     atomic.Int64
	limited   atomic.Int64
	// Requeue tests (outbox_watch_test.go): the next refuse /sends are answered 400 M_UNKNOWN,
	// as by a homeserver still starting; the next drop /sends reach the server, and the
	// connection is then closed with no answer.
	refuse, drop atomic.Int64
}

func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.delay > 0 {
			time.Sleep(p.delay)
		}
		if r.Method == http.MethodPut && isSend(r.URL.Path) {
			n := p.sends.Add(1)
			if p.refuse.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"not ready"}`))
				return
			}
			p.refuse.Store(0)
			if p.drop.Add(-1) >= 0 {
				rp.ServeHTTP(httptest.NewRecorder(), r)
				panic(http.ErrAbortHandler) // the answer is lost on the way
			}
			p.drop.Store(0)
			if p.limitEach > 0 && n%p.limitEach == 0 {
				p.limited.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":150}`))
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func isSend(path string) bool {
	const prefix = "/_matrix/client/v3/rooms/"
	if len(path) <= len(prefix) || path[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i+6 <= len(path); i++ {
		if path[i:i+6] == "/send/" {
			return true
		}
	}
	return false
}
