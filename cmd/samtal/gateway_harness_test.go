package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/dnstest"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// gatewayConfigHead is how a gateway test's configuration begins: the database of the test's
// environment (clearEnv), no encryption, SMTP and HTTP on free loopback ports.
const gatewayConfigHead = `database: ${SAMTAL_DB}
matrix: {e2ee: false}
smtp: {listen: "127.0.0.1:0", domain: mx.test}
http: {listen: "127.0.0.1:0"}
`

// writeGatewayConfig writes gatewayConfigHead and then rest (the sections a test is about) to
// dir/gateway.yaml, and returns its path.
func writeGatewayConfig(t *testing.T, dir, rest string) string {
	t.Helper()
	p := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, p, gatewayConfigHead+rest)
	return p
}

// mailRoom is what a gateway test delivers into: the CLI logged in as mailbot (the gateway's
// account) on hsURL, srv's URL or a proxy in front of it, and a room of mailbot's that
// officer, a raw client of srv, has joined.
func mailRoom(t *testing.T, srv *matrixtest.Server, hsURL string) (officer *mautrix.Client, room id.RoomID) {
	t.Helper()
	loginVia(t, srv, hsURL, "mailbot")
	officer = srv.Client(t, "officer")
	return officer, sharedRoom(t, officer)
}

// waitBody waits until a message whose body contains text arrives in room, as cli sees it.
func waitBody(t *testing.T, cli *mautrix.Client, room id.RoomID, text string) {
	t.Helper()
	matrixtest.WaitEvent(t, cli, room, func(e *event.Event) bool {
		return e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, text)
	})
}

// sendFromLoopback publishes, for each domain, an SPF record that lets loopback send its mail
// and a DMARC policy of reject: mail the test sends from there passes as the domain's.
func sendFromLoopback(zone *dnstest.Zone, domains ...string) {
	for _, d := range domains {
		zone.TXT(d, "v=spf1 ip4:127.0.0.0/8 -all")
		zone.TXT("_dmarc."+d, "v=DMARC1; p=reject")
	}
}

// gatewayUnderTest is `samtal gateway` running in-process for one test.
type gatewayUnderTest struct {
	smtpAddr    string      // the SMTP listener, host:port
	httpURL     string      // the HTTP listener (health, metrics), http://host:port
	out, errOut *syncBuffer // what it printed
	logs        *syncBuffer // its log, as text

	cancel  context.CancelFunc
	exited  chan struct{} // closed when run returned, with code set
	code    int
	stopped bool
}

// serveGateway runs `samtal gateway --config cfgPath` until the test ends or stop is called, and
// waits until it has printed its listeners. The test fails if it does not exit cleanly.
func serveGateway(t *testing.T, cfgPath string) *gatewayUnderTest {
	t.Helper()
	e, out, errOut := testEnv()
	gw := &gatewayUnderTest{out: out, errOut: errOut, logs: &syncBuffer{}, exited: make(chan struct{})}
	e.log = slog.New(slog.NewTextHandler(gw.logs, nil))
	ctx, cancel := context.WithCancel(t.Context())
	gw.cancel = cancel
	early := make(chan int, 1) // for waitFor: an exit before the listeners are up
	go func() {
		gw.code = run(ctx, e, []string{"gateway", "--config", cfgPath})
		close(gw.exited)
		early <- gw.code
	}()
	t.Cleanup(func() {
		if gw.stopped {
			return
		}
		cancel()
		<-gw.exited
		if gw.code != exitOK {
			t.Errorf("gateway exited %d: %s", gw.code, errOut)
		}
	})
	waitFor(t, func() bool { return strings.Contains(out.String(), "http") }, early, errOut)
	gw.smtpAddr = gw.listener(t, "smtp")
	gw.httpURL = "http://" + gw.listener(t, "http")
	return gw
}

// listener returns the address the gateway printed for its listener name (smtp, smtps, http).
func (gw *gatewayUnderTest) listener(t *testing.T, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(name) + `\s+(\S+)`).FindStringSubmatch(gw.out.String())
	if m == nil {
		t.Fatalf("the gateway printed no %s listener:\n%s", name, gw.out)
	}
	return m[1]
}

// stop stops the gateway, as SIGTERM does, and fails the test unless it exits cleanly.
func (gw *gatewayUnderTest) stop(t *testing.T) {
	t.Helper()
	gw.stopped = true
	gw.cancel()
	<-gw.exited
	if gw.code != exitOK {
		t.Fatalf("gateway exited %d: %s", gw.code, gw.errOut)
	}
}
