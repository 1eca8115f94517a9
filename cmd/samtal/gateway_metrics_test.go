package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/dnstest"
	"github.com/samtalhq/samtal/internal/dovecottest"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestGatewayMetricsIMAPAndFederation scrapes /metrics of `samtal gateway` while it takes
// mail from a real Dovecot and keeps a federation list from list_url fresh: a mail from IMAP
// that its route refuses (DMARC fail, sender_policy reject) counts as a dead delivery with its
// DMARC result; the watcher's fetches, failures (a list signed with another key), the time of
// its last good fetch, and the version in use and its expiry are there, and follow a newer
// version.
func TestGatewayMetricsIMAPAndFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	dir := t.TempDir()
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "mailbot")
	officer := srv.Client(t, "officer")
	room := sharedRoom(t, officer)
	zone := dnstest.Start(t)
	zone.TXT("_dmarc.forged.example", "v=DMARC1; p=reject")
	imap := dovecottest.Start(t, dovecottest.Options{})
	_, keyFile, signer := writeFederationList(t, dir, "agency.example")
	_, _, otherSigner := writeFederationList(t, t.TempDir(), "agency.example")
	ls := newListServer(t, dir, signedList(t, dir, signer, 1, "agency.example"))

	t.Setenv("GW_TEST_IMAP_PASSWORD", imap.Password)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(`database: ${SAMTAL_DB}
matrix: {e2ee: false}
smtp: {listen: "127.0.0.1:0", domain: mx.test}
http: {listen: "127.0.0.1:0"}
dns: {server: "%[1]s", cache: 0s}
federation: {list_url: "%[2]s/list.jws", key_file: %[3]s, ca_file: %[4]s, refresh: 50ms}
imap:
  - {addr: "%[5]s", security: none, username: %[6]s, password: "${GW_TEST_IMAP_PASSWORD}", poll_interval: 200ms,
     mailboxes: [{name: INBOX, address: reject@agency.example}]}
routes:
  - {address: reject@agency.example, room: "%[7]s", sender_policy: reject}
  - {address: members@agency.example, room: "%[7]s", members_only: true}
`, zone.Addr, ls.URL, keyFile, ls.caFile, imap.Addr, imap.User, room))
	e, out, errOut := testEnv()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"gateway", "--config", cfgPath}) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("gateway exited %d: %s", code, errOut)
		}
	})
	waitFor(t, func() bool { return strings.Contains(out.String(), "http") }, done, errOut)
	metricsURL := "http://" + regexp.MustCompile(`(?m)^\s+http\s+(\S+)`).FindStringSubmatch(out.String())[1] + "/metrics"
	scrape := func(want func(m map[string]float64) error) {
		t.Helper()
		matrixtest.Eventually(t, func() error {
			code, body := get(t, metricsURL)
			if code != 200 {
				return fmt.Errorf("/metrics: %d %s", code, body)
			}
			return want(promValues(body))
		})
	}

	dovecottest.Append(t, imap.Client(t), "INBOX", "From: Boss <boss@forged.example>\r\nTo: reject@agency.example\r\nSubject: Forged\r\nMessage-ID: <forged-1@forged.example>\r\n\r\nPay now\r\n")
	scrape(func(m map[string]float64) error {
		if m[`samtal_gateway_deliveries_total{outcome="dead"}`] != 1 || m[`samtal_gateway_dmarc_results_total{result="fail"}`] != 1 {
			return fmt.Errorf("dead deliveries %v, DMARC fail %v; want 1 and 1",
				m[`samtal_gateway_deliveries_total{outcome="dead"}`], m[`samtal_gateway_dmarc_results_total{result="fail"}`])
		}
		return nil
	})

	scrape(func(m map[string]float64) error {
		last := m["samtal_gateway_federation_last_success_timestamp_seconds"]
		switch {
		case m["samtal_gateway_federation_refreshes_total"] < 2:
			return fmt.Errorf("refreshes %v, want at least 2 (the first fetch and the watcher's)", m["samtal_gateway_federation_refreshes_total"])
		case m["samtal_gateway_federation_refresh_failures_total"] != 0:
			return fmt.Errorf("failures %v with a good list", m["samtal_gateway_federation_refresh_failures_total"])
		case m["samtal_gateway_federation_list_version"] != 1:
			return fmt.Errorf("version %v, want 1", m["samtal_gateway_federation_list_version"])
		case m["samtal_gateway_federation_list_expiry_timestamp_seconds"] < float64(time.Now().Unix()):
			return fmt.Errorf("expiry %v, not in the future", m["samtal_gateway_federation_list_expiry_timestamp_seconds"])
		case last < float64(time.Now().Add(-time.Hour).Unix()):
			return fmt.Errorf("last success %v, not a recent time", last)
		}
		return nil
	})

	// Signed with another key: refused, counted; the last good list (version 1) stays.
	ls.serve(t, signedList(t, t.TempDir(), otherSigner, 5, "agency.example"))
	scrape(func(m map[string]float64) error {
		if m["samtal_gateway_federation_refresh_failures_total"] < 1 || m["samtal_gateway_federation_list_version"] != 1 {
			return fmt.Errorf("failures %v, version %v; want at least 1 and 1", m["samtal_gateway_federation_refresh_failures_total"], m["samtal_gateway_federation_list_version"])
		}
		return nil
	})
	ls.list.Store(ptr(signedList(t, dir, signer, 2, "agency.example")))
	scrape(func(m map[string]float64) error {
		if m["samtal_gateway_federation_list_version"] != 2 {
			return fmt.Errorf("version %v, want 2 once it is served", m["samtal_gateway_federation_list_version"])
		}
		return nil
	})
}

// promValues reads the samples of a Prometheus text exposition: each line "name{labels}
// value" as a key "name{labels}" (as written) and its value.
func promValues(body string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}
