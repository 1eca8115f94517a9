package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// holdingProxy passes everything to the real homeserver but holds event sends (PUT .../send/)
// until release: a fault Dendrite will not produce on demand, a homeserver that takes a send
// and does not answer yet. It is what keeps a delivery in the outbox ("posted").
type holdingProxy struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

func newHoldingProxy(t *testing.T, target string) *holdingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &holdingProxy{release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/send/") {
			select {
			case <-p.release:
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.unhold()
		p.Close()
	})
	return p
}

// unhold lets the held sends and all later ones through.
func (p *holdingProxy) unhold() { p.once.Do(func() { close(p.release) }) }

// TestGatewaySpoolPosted: a mail the gateway has posted into the outbox, whose send the
// homeserver has not answered yet, is listed by `gateway spool list` as posted with its age,
// found by `--state posted` and not by `--state dead`, and shown by `spool show`; once the
// homeserver takes the send, it arrives and leaves the list.
func TestGatewaySpoolPosted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite")
	}
	srv := matrixtest.NewServer(t)
	proxy := newHoldingProxy(t, srv.URL)
	officer, room := mailRoom(t, srv, proxy.URL)
	cfgPath := writeGatewayConfig(t, t.TempDir(), fmt.Sprintf(`delivery: {min_retry_delay: 50ms, max_retry_delay: 200ms}
routes:
  - {address: cases@agency.example, room: "%s"}
`, room))
	gw := serveGateway(t, cfgPath)

	c, err := smtp.Dial(gw.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("system@agency.example", []string{"cases@agency.example"}, strings.NewReader("From: system@agency.example\r\nSubject: Held\r\n\r\nSecret body\r\n")); err != nil {
		t.Fatal(err)
	}
	listed := regexp.MustCompile(`(?m)^(\d+)\s+posted\s+\d+(\.\d+)?[a-z]+\s+\S+\s+\d+\s+` + regexp.QuoteMeta(string(room)) + `\s+system@agency\.example$`)
	var spoolID string
	matrixtest.Eventually(t, func() error {
		r := samtal(t, nil, "gateway", "spool", "list", "--config", cfgPath)
		m := listed.FindStringSubmatch(r.stdout)
		if m == nil {
			return fmt.Errorf("no posted mail listed: %d %s %s", r.code, r.stdout, r.stderr)
		}
		spoolID = m[1]
		return nil
	})
	if list := mustSamtal(t, "gateway", "spool", "list", "--state", "posted", "--config", cfgPath); !listed.MatchString(list) {
		t.Errorf("--state posted:\n%s", list)
	}
	if list := mustSamtal(t, "gateway", "spool", "list", "--state", "dead", "--config", cfgPath); strings.Contains(list, string(room)) {
		t.Errorf("--state dead lists the posted mail:\n%s", list)
	}
	if r := samtal(t, nil, "gateway", "spool", "list", "--state", "lost", "--config", cfgPath); r.code != exitUsage || !strings.Contains(r.stderr, "--state") {
		t.Errorf("--state lost: exit %d %s", r.code, r.stderr)
	}
	show := mustSamtal(t, "gateway", "spool", "show", spoolID, "--config", cfgPath)
	if !regexp.MustCompile(`(?m)^state\s+posted$`).MatchString(show) || !regexp.MustCompile(`(?m)^age\s+\d+`).MatchString(show) || strings.Contains(show, "Secret body") {
		t.Errorf("spool show:\n%s", show)
	}

	proxy.unhold()
	waitBody(t, officer, room, "Subject: Held")
	matrixtest.Eventually(t, func() error {
		if list := mustSamtal(t, "gateway", "spool", "list", "--config", cfgPath); strings.Contains(list, string(room)) {
			return fmt.Errorf("still listed after delivery:\n%s", list)
		}
		return nil
	})
	gw.stop(t)
}
