package mailbridge_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// sendProxy sits between the gateway's bot and the real homeserver and injects a fault Dendrite
// will not produce on demand: a refusal (400 M_UNKNOWN, as from a homeserver still starting)
// of event sends, which the outbox takes as final. Everything else goes to the real server.
type sendProxy struct {
	*httptest.Server
	refuse     atomic.Int64 // the next n sends are refused
	hold       atomic.Bool  // sends wait for release, then are refused (refuseHeld) or go on
	refuseHeld atomic.Bool
	held       chan struct{} // a value per send held
	release    chan struct{} // closed by unhold, to answer the held sends
	once       sync.Once
}

// unhold answers the sends held and lets the next ones through.
func (p *sendProxy) unhold() {
	p.hold.Store(false)
	p.once.Do(func() { close(p.release) })
}

func newSendProxy(t *testing.T, target string) *sendProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &sendProxy{held: make(chan struct{}, 64), release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/send/") {
			refuse := p.refuse.Add(-1) >= 0
			if !refuse {
				p.refuse.Store(0)
			}
			if p.hold.Load() {
				p.held <- struct{}{}
				<-p.release
				refuse = p.refuseHeld.Load()
			}
			if refuse {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"not ready"}`))
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.unhold() // a test that failed while holding would wait for its held sends for ever
		p.Close()
	})
	return p
}

// botVia returns a samtal client for localpart that reaches srv through the proxy.
func botVia(t *testing.T, srv *matrixtest.Server, p *sendProxy, localpart string) *matrix.Client {
	t.Helper()
	_, password := srv.RegisterUser(t, localpart)
	log := logtest.Verbose(t, slog.LevelInfo)
	c, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: p.URL, Login: matrix.Password(localpart, password), DB: openDB(t, localpart+".db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestOutboxRefusalPostedAgain: the homeserver refuses the post of a mail that got 250 (a
// fault injected by the proxy), so the outbox fails it for good. The mail is not done: it is
// posted again (the outbox item requeued) and arrives, once.
func TestOutboxRefusalPostedAgain(t *testing.T) {
	counts := &outcomeCounts{}
	s, proxy := newProxiedScene(t, mailbridge.Options{Metrics: counts})

	proxy.refuse.Store(2) // the first post, and its first requeue
	s.send(t, "a@agency.example", mail("a@agency.example", "Refused", "refused@agency.example", "x"))
	s.inbox.Wait(t, subjectLine("Refused"))
	waitSpoolEmpty(t, s.g)
	if n := count(s.inbox, subjectLine("Refused")); n != 1 {
		t.Errorf("posted %d times, want once", n)
	}
	if d, r := counts.delivered.Load(), counts.retry.Load(); d != 1 || r < 2 {
		t.Errorf("deliveries counted: %d delivered, %d retried; want 1 and at least 2", d, r)
	}
}

// TestOutboxFailureWhileGatewayDown: the gateway posts a mail and stops; the outbox, still
// running, then has the post refused for good (injected by the proxy). The next gateway on the
// same database finds the posted delivery whose post failed, posts it again, and it arrives.
func TestOutboxFailureWhileGatewayDown(t *testing.T) {
	s, proxy := newProxiedStage(t)
	bot := s.bot
	inbox := matrixtest.NewRecorder(t, s.officer, s.room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	if err != nil {
		t.Fatal(err)
	}
	opts := mailbridge.Options{Client: bot, Router: router, DB: openDB(t, "spool.db")}

	proxy.hold.Store(true)
	proxy.refuseHeld.Store(true)
	first, addr := startGateway(t, opts)
	if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "While down", "down@agency.example", "x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proxy.held:
	case <-t.Context().Done():
		t.Fatal("the post never reached the homeserver")
	}
	matrixtest.Eventually(t, func() error {
		u, err := first.Undelivered(t.Context())
		if err != nil || len(u) != 1 || !u[0].Posted {
			return fmt.Errorf("undelivered %+v, %v; want the mail posted", u, err)
		}
		return nil
	})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	proxy.unhold() // the outbox hears the refusal with no gateway running
	matrixtest.Eventually(t, func() error {
		items, err := matrix.ListOutbox(t.Context(), bot.Database(), bot.SessionName(), "failed")
		if err != nil || len(items) != 1 {
			return fmt.Errorf("failed outbox items %d, %v; want 1", len(items), err)
		}
		return nil
	})

	second, _ := startGateway(t, opts)
	inbox.Wait(t, subjectLine("While down"))
	waitSpoolEmpty(t, second)
	if n := count(inbox, subjectLine("While down")); n != 1 {
		t.Errorf("posted %d times, want once", n)
	}
}

// waitSpoolEmpty waits until the gateway has no delivery left that is not done.
func waitSpoolEmpty(t *testing.T, g *mailbridge.Gateway) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		st, err := g.SpoolStats(t.Context())
		if err != nil || st.Pending != 0 || st.Dead != 0 {
			return fmt.Errorf("spool %+v, %v; want nothing left", st, err)
		}
		return nil
	})
}

// outcomeCounts counts a gateway's delivery outcomes (a mailbridge.Metrics).
type outcomeCounts struct{ delivered, retry, dead atomic.Int64 }

func (c *outcomeCounts) SMTPReply(int) {}
func (c *outcomeCounts) DMARC(string)  {}
func (c *outcomeCounts) Delivery(outcome string) {
	switch outcome {
	case mailbridge.OutcomeDelivered:
		c.delivered.Add(1)
	case mailbridge.OutcomeRetry:
		c.retry.Add(1)
	case mailbridge.OutcomeDead:
		c.dead.Add(1)
	}
}
