package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestGatewayConfigValueKeys: a value of gateway.yaml that is not of its kind (a duration, a
// size or count, a yes/no, a network or mail address, a list or a mapping) is reported by its
// key, with its line in the file as written (before ${NAME} expansion changed nothing there),
// and an unknown key by its whole key; `samtal gateway` exits with a usage error saying so,
// before it logs in.
func TestGatewayConfigValueKeys(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	t.Setenv("GW_TEST_POLL", "5x")
	const head = "database: x.db\n"
	route := "routes: [{address: cases@agency.example, room: '!r:b'}]\n"
	imap := func(more string) string {
		return "imap:\n  - addr: imap.agency.example:993\n    username: u\n    password: p\n" + more + route
	}
	for _, tc := range []struct{ body, want string }{
		// durations
		{imap("    poll_interval: 5x\n"), `imap[0].poll_interval: "5x" is not a duration such as 30s or 5m (line 6)`},
		{imap("    poll_interval: ${GW_TEST_POLL}\n"), `imap[0].poll_interval: "5x" is not a duration such as 30s or 5m (line 6)`},
		{imap("    idle_restart: 25\n"), `imap[0].idle_restart: "25" is not a duration`},
		{"delivery: {max_retry_delay: soon}\n" + route, `delivery.max_retry_delay: "soon" is not a duration`},
		{"dns: {cache: 1 minute}\n" + route, `dns.cache: "1 minute" is not a duration`},
		{"federation: {refresh: [1m]}\n" + route, `federation.refresh: a list is not a duration`},
		// sizes and counts
		{"smtp:\n  max_message_bytes: 25MB\n" + route, `smtp.max_message_bytes: "25MB" is not a number of bytes such as 26214400 (25 MiB) (line 3)`},
		{"smtp: {max_header_bytes: -1}\n" + route, `smtp.max_header_bytes: -1 is negative`},
		{"smtp: {max_recipients: many}\n" + route, `smtp.max_recipients: "many" is not a whole number`},
		// yes or no
		{"routes: [{address: cases@agency.example, room: '!r:b', members_only: maybe}]\n", `routes[0].members_only: "maybe" is not true or false`},
		// network addresses
		{"smtp: {listen: localhost}\n" + route, `smtp.listen: "localhost" is not host:port such as 127.0.0.1:2525`},
		{"http: {listen: '9125'}\n" + route, `http.listen: "9125" is not host:port`},
		{"smtp: {tls: {listen: 465}}\n" + route, `smtp.tls.listen: "465" is not host:port`},
		{"imap: [{addr: imap.agency.example, username: u, password: p}]\n" + route, `imap[0].addr: "imap.agency.example" is not host:port such as imap.agency.example:993`},
		// mail addresses
		{"routes: [{address: cases@agency.example, room: '!r:b'}, {address: registry, room: '!r:b'}]\n", `routes[1].address: "registry" is not a mail address such as cases@agency.example`},
		{"routes: [{address: cases@agency.example, room: '!r:b', allow_senders: ['@agency.example', agency.example]}]\n", `routes[0].allow_senders[1]: "agency.example" is not an address such as system@agency.example or a domain such as @agency.example`},
		{imap("    mailboxes: [{name: INBOX, address: 'Registry <registry@agency.example>'}]\n"), `imap[0].mailboxes[0].address: "Registry <registry@agency.example>" is not a mail address`},
		// shapes and unknown keys
		{"routes: {address: cases@agency.example, room: '!r:b'}\n", `routes: a mapping is not a list (line 2)`},
		{"smtp: localhost:25\n" + route, `smtp: "localhost:25" is not a mapping of keys`},
		{imap("    mailboxes: [{name: INBOX, flags: x}]\n"), `imap[0].mailboxes[0].flags: unknown key (line 6)`},
	} {
		p := filepath.Join(dir, "gateway.yaml")
		writeConfig(t, p, head+tc.body)
		_, err := loadGatewayConfig(p)
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n  %v\n  want an error saying %s", tc.body, err, tc.want)
		}
	}

	// The example's values, and power levels that are negative, pass.
	writeConfig(t, filepath.Join(dir, "ok.yaml"), head+"templates: {case: {power_levels: {'@muted:agency.example': -1}}}\n"+
		"routes: [{address: 'case-{id}@cases.agency.example', room: '#case-{id}:agency.example', template: case, allow_senders: ['@agency.example', system@partner.example]}]\n")
	if _, err := loadGatewayConfig(filepath.Join(dir, "ok.yaml")); err != nil {
		t.Errorf("a good configuration: %v", err)
	}

	// A route the router refuses is reported before the gateway logs in (no homeserver here).
	for _, tc := range []struct{ body, want string }{
		{imap("    poll_interval: 5x\n"), `imap[0].poll_interval: "5x" is not a duration`},
		{"routes: [{address: cases@agency.example, room: 'cases'}]\n", `routes: mailbridge: invalid route: route 1 (cases@agency.example)`},
	} {
		p := filepath.Join(dir, "cli.yaml")
		writeConfig(t, p, fmt.Sprintf("database: %s\nmatrix: {homeserver: 'http://127.0.0.1:1'}\n%s", filepath.Join(dir, "gw.db"), tc.body))
		r := samtal(t, nil, "gateway", "--config", p)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want a usage error saying %s", tc.body, r.code, r.stderr, tc.want)
		}
	}
}
