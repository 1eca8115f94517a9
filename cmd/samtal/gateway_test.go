package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestGatewayExampleConfig: the documented example configuration loads and its routes make a
// router.
func TestGatewayExampleConfig(t *testing.T) {
	t.Setenv("SAMTAL_DB", "")
	cfg, err := loadGatewayConfig(filepath.Join("..", "..", "docs", "gateway.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database != "/var/lib/samtal/gateway.db" || cfg.SMTP.Listen != "127.0.0.1:2525" || cfg.SMTP.MaxMessageBytes != 26214400 {
		t.Errorf("defaults not expanded: %+v", cfg)
	}
	routes, err := cfg.routes()
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 3 || routes[2].Create == nil || routes[2].Create.Name != "Case mail" || routes[2].Create.PowerLevels["@registry:agency.example"] != 50 {
		t.Errorf("routes = %+v", routes)
	}
	if _, err := mailbridge.NewRouter(routes...); err != nil {
		t.Error(err)
	}
}

// TestGatewayConfigErrors: ${NAME} is expanded from the environment (numbers stay numbers, a
// value is never read as YAML); an unset variable, an unknown field, a missing template and a
// bad duration are errors that name the problem.
func TestGatewayConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, fmt.Sprintf("c%d.yaml", len(body)))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("GW_TEST_DB", "postgres://u:secret@db/x")
	t.Setenv("GW_TEST_SIZE", "1000")
	t.Setenv("GW_TEST_ROOM", "#a:b\nrouted: [x]") // not YAML, just a (bad) room name
	cfg, err := loadGatewayConfig(write("database: ${GW_TEST_DB}\nsmtp:\n  max_message_bytes: ${GW_TEST_SIZE}\nroutes:\n  - {address: a@b.example, room: \"${GW_TEST_ROOM}\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database != "postgres://u:secret@db/x" || cfg.SMTP.MaxMessageBytes != 1000 || cfg.Routes[0].Room != "#a:b\nrouted: [x]" {
		t.Errorf("expanded: %+v", cfg)
	}
	for _, tc := range []struct{ body, want string }{
		{"database: ${GW_TEST_UNSET}\nroutes: [{address: a@b.example, room: '!r:b'}]\n", "GW_TEST_UNSET is not set"},
		{"database: x.db\nsmpt: {}\nroutes: [{address: a@b.example, room: '!r:b'}]\n", "smpt"},
		{"database: x.db\nroutes: []\n", "no routes"},
		{"database: x.db\ndelivery: {max_retry_delay: soon}\nroutes: [{address: a@b.example, room: '!r:b'}]\n", "not a duration"},
	} {
		_, err := loadGatewayConfig(write(tc.body))
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows a password: %v", err)
		}
	}
	cfg, err = loadGatewayConfig(write("database: x.db\nroutes: [{address: a@b.example, room: '#r:b', template: nope}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.routes(); !errors.Is(err, errConfig) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing template: %v", err)
	}
}

// TestGatewayCommand runs `samtal gateway` against a real homeserver: mail sent over SMTP
// arrives in the routed room, /readyz turns ready, /metrics counts replies, deliveries and the
// spool; a mail for a room that does not exist becomes a dead letter that `gateway spool`
// lists, shows, retries and drops; SIGTERM (the context ending) stops it cleanly.
func TestGatewayCommand(t *testing.T) {
	srv := matrixtest.NewServer(t)
	officer, room := mailRoom(t, srv, srv.URL)
	cfgPath := writeGatewayConfig(t, t.TempDir(), fmt.Sprintf(`delivery: {min_retry_delay: 50ms, max_retry_delay: 200ms, dead_letter_after: 1ms}
routes:
  - {address: cases@agency.example, room: "%s"}
  - {address: lost@agency.example, room: "#nowhere:%s"}
`, room, srv.ServerName))
	gw := serveGateway(t, cfgPath)
	httpURL := gw.httpURL

	c, err := smtp.Dial(gw.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, rcpt := range []string{"cases@agency.example", "lost@agency.example", "lost@agency.example"} {
		if err := c.SendMail("system@agency.example", []string{rcpt}, strings.NewReader("From: system@agency.example\r\nSubject: Gateway command "+rcpt+"\r\n\r\nHello\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	waitBody(t, officer, room, "Subject: Gateway command cases@agency.example")
	matrixtest.Eventually(t, func() error {
		if code, body := get(t, httpURL+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})
	if code, _ := get(t, httpURL+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz %d", code)
	}
	var spoolID, dropID string
	matrixtest.Eventually(t, func() error {
		r := samtal(t, nil, "gateway", "spool", "list", "--config", cfgPath)
		m := regexp.MustCompile(`(?m)^(\d+)\s+dead\s+.*#nowhere:`).FindAllStringSubmatch(r.stdout, -1)
		if len(m) != 2 {
			return fmt.Errorf("not two dead letters listed: %d %s %s", r.code, r.stdout, r.stderr)
		}
		spoolID, dropID = m[0][1], m[1][1]
		return nil
	})
	// A delivery counts as delivered once the outbox reports it sent, which the gateway's
	// confirmer records a moment after the event is in the room: wait for it.
	matrixtest.Eventually(t, func() error {
		_, metrics := get(t, httpURL+"/metrics")
		for _, want := range []string{`samtal_gateway_smtp_replies_total{code="250"}`,
			`samtal_gateway_deliveries_total{outcome="delivered"} 1`, `samtal_gateway_deliveries_total{outcome="dead"} 2`,
			"samtal_gateway_spool_dead 2", "samtal_gateway_spool_pending 0", "samtal_gateway_spool_oldest_age_seconds 0"} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
	if show := mustSamtal(t, "gateway", "spool", "show", spoolID, "--config", cfgPath); !strings.Contains(show, "lost@agency.example") || !strings.Contains(show, "dead") || strings.Contains(show, "Hello") {
		t.Errorf("spool show:\n%s", show)
	}
	if r := samtal(t, nil, "gateway", "spool", "retry", "999999", "--config", cfgPath); r.code != exitNotFound {
		t.Errorf("retry of an unknown mail: exit %d %s", r.code, r.stderr)
	}
	if r := samtal(t, nil, "gateway", "spool", "show", "x", "--config", cfgPath); r.code != exitUsage {
		t.Errorf("show x: exit %d", r.code)
	}
	// A dead mail not to be delivered is dropped, and is gone.
	if out := mustSamtal(t, "gateway", "spool", "drop", dropID, "--config", cfgPath); !strings.Contains(out, "mail "+dropID+" is dropped") {
		t.Errorf("spool drop: %s", out)
	}
	if r := samtal(t, nil, "gateway", "spool", "drop", dropID, "--config", cfgPath); r.code != exitNotFound {
		t.Errorf("drop of a dropped mail: exit %d %s", r.code, r.stderr)
	}
	if list := mustSamtal(t, "gateway", "spool", "list", "--config", cfgPath); regexp.MustCompile(`(?m)^` + dropID + `\s`).MatchString(list) {
		t.Errorf("the dropped mail is listed:\n%s", list)
	}
	gw.stop(t)
	// Retried while the gateway is stopped: pending, and posted (as dead again) by the next run.
	mustSamtal(t, "gateway", "spool", "retry", spoolID, "--config", cfgPath)
	if list := mustSamtal(t, "gateway", "spool", "list", "--config", cfgPath); !regexp.MustCompile(`(?m)^` + spoolID + `\s+pending`).MatchString(list) {
		t.Errorf("after retry:\n%s", list)
	}
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
