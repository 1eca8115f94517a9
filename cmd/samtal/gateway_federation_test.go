package main

import (
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/internal/dnstest"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// listServer serves a signed federation list over HTTPS (httptest's TLS server with a
// certificate of its own CA), the list it serves replaced by the test as it runs.
type listServer struct {
	*httptest.Server
	list     atomic.Pointer[[]byte]
	requests atomic.Int64
	caFile   string // the server's certificate, for federation.ca_file
}

func newListServer(t *testing.T, dir string, list []byte) *listServer {
	t.Helper()
	ls := &listServer{}
	ls.list.Store(&list)
	ls.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ls.requests.Add(1)
		if r.URL.Path != "/list.jws" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jose")
		_, _ = w.Write(*ls.list.Load())
	}))
	t.Cleanup(ls.Close)
	ls.caFile = filepath.Join(dir, "list-ca.pem")
	writeConfig(t, ls.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ls.Certificate().Raw})))
	return ls
}

// serve replaces the list served, and waits until it has been asked for twice since, so that
// the gateway's watcher has seen it (its refresh is short in these tests).
func (ls *listServer) serve(t *testing.T, list []byte) {
	t.Helper()
	ls.list.Store(&list)
	seen := ls.requests.Load()
	matrixtest.Eventually(t, func() error {
		if n := ls.requests.Load() - seen; n < 2 {
			return fmt.Errorf("the list was asked for %d times since it changed", n)
		}
		return nil
	})
}

// signedList is a version of the federation list signed by signer, one member per domain.
func signedList(t *testing.T, dir string, signer crypto.Signer, version uint64, domains ...string) []byte {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("list-%d.jws", version))
	writeListVersion(t, signer, p, version, domains...)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestGatewayFederationListURL: federation.list_url with key_file and ca_file: the gateway
// fetches the signed list over HTTPS before it starts and keeps it fresh while it runs. A
// members_only route takes mail from a member's verified domain and refuses an outsider's;
// a list signed with another key is refused and the last good one kept; a newer version
// naming the outsider lets its mail in, with no restart.
func TestGatewayFederationListURL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite")
	}
	dir := t.TempDir()
	srv := matrixtest.NewServer(t)
	officer, room := mailRoom(t, srv, srv.URL)
	zone := dnstest.Start(t)
	sendFromLoopback(zone, "agency.example", "outsider.example")
	_, keyFile, signer := writeFederationList(t, dir, "agency.example")
	_, _, otherSigner := writeFederationList(t, t.TempDir(), "agency.example")
	ls := newListServer(t, dir, signedList(t, dir, signer, 1, "agency.example"))

	cfgPath := writeGatewayConfig(t, dir, fmt.Sprintf(`dns: {server: "%[1]s"}
federation: {list_url: "%[2]s/list.jws", key_file: %[3]s, ca_file: %[4]s, refresh: 50ms, cache_file: %[5]s}
routes:
  - {address: members@agency.example, room: "%[6]s", members_only: true}
`, zone.Addr, ls.URL, keyFile, ls.caFile, filepath.Join(dir, "cache.jws"), room))
	gw := serveGateway(t, cfgPath)
	logs := gw.logs
	arrives := func(subject string) {
		t.Helper()
		waitBody(t, officer, room, "Subject: "+subject+"\n")
	}
	notMember := smtp.EnhancedCode{5, 7, 1}

	c := dialSMTP(t, gw.smtpAddr, "127.0.0.1")
	if err := sendOn(c, "anna@agency.example", "members@agency.example", mailText("Anna <anna@agency.example>", "From a member", "")); err != nil {
		t.Fatalf("a member's verified mail: %v", err)
	}
	arrives("From a member")
	wantSMTPCode(t, "an outsider, list version 1", sendOn(c, "eve@outsider.example", "members@agency.example", mailText("Eve <eve@outsider.example>", "Outsider 1", "")), 550, notMember)

	// Signed with another key: refused, the list in use stays version 1.
	ls.serve(t, signedList(t, t.TempDir(), otherSigner, 5, "agency.example", "outsider.example"))
	wantSMTPCode(t, "an outsider, after a list with a bad signature", sendOn(c, "eve@outsider.example", "members@agency.example", mailText("Eve <eve@outsider.example>", "Outsider 2", "")), 550, notMember)
	if !strings.Contains(logs.String(), "federation: list refused") {
		t.Errorf("the refused list is not in the log:\n%s", logs.String())
	}

	// A newer version naming the outsider: taken while the gateway runs.
	ls.list.Store(ptr(signedList(t, dir, signer, 2, "agency.example", "outsider.example")))
	matrixtest.Eventually(t, func() error {
		return sendOn(c, "eve@outsider.example", "members@agency.example", mailText("Eve <eve@outsider.example>", "Outsider, now a member", ""))
	})
	arrives("Outsider, now a member")
	// And one that drops agency.example again: its mail is refused from then on.
	ls.list.Store(ptr(signedList(t, dir, signer, 3, "outsider.example")))
	matrixtest.Eventually(t, func() error {
		err := sendOn(c, "anna@agency.example", "members@agency.example", mailText("Anna <anna@agency.example>", "No longer a member", ""))
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 550 {
			return nil
		}
		return fmt.Errorf("anna's mail after her agency left the list: %v", err)
	})
}

func ptr[T any](v T) *T { return &v }

// TestGatewayFederationListURLErrors: a federation.list_url that cannot work stops the
// gateway before it starts, with the key the problem is about.
func TestGatewayFederationListURLErrors(t *testing.T) {
	dir := t.TempDir()
	listFile, keyFile, signer := writeFederationList(t, dir, "agency.example")
	ls := newListServer(t, dir, signedList(t, dir, signer, 1, "agency.example"))
	route := "routes: [{address: members@agency.example, room: '!r:hs', members_only: true}]\n"
	for _, tc := range []struct{ fed, want string }{
		{fmt.Sprintf("{list_url: 'http://%s/list.jws', key_file: %s}", ls.Listener.Addr(), keyFile), "federation.list_url: \"http://"},
		{fmt.Sprintf("{list_url: '%s/list.jws', list_file: %s, key_file: %s}", ls.URL, listFile, keyFile), "federation.list_url: list_file is set too"},
		{fmt.Sprintf("{list_url: '%s/list.jws'}", ls.URL), "federation.key_file: needed with list_url"},
		{fmt.Sprintf("{list_url: '%s/list.jws', key_file: %s, ca_file: /nonexistent/ca.pem}", ls.URL, keyFile), "federation.ca_file"},
		{fmt.Sprintf("{list_url: '%s/list.jws', key_file: %s, ca_file: %s}", ls.URL, keyFile, keyFile), "federation.ca_file: no PEM certificate"},
		{fmt.Sprintf("{list_url: '%s/list.jws', key_file: %s}", ls.URL, keyFile), "federation.list_url: no federation list to start with"},
		{fmt.Sprintf("{list_url: '%s/list.jws', key_file: %s}", ls.URL, keyFile), "certificate"},
		{fmt.Sprintf("{list_url: '%s/missing.jws', key_file: %s, ca_file: %s}", ls.URL, keyFile, ls.caFile), "federation.list_url: no federation list to start with"},
		{fmt.Sprintf("{list_file: %s, key_file: %s, ca_file: %s}", listFile, keyFile, ls.caFile), "federation.ca_file: only used with federation.list_url"},
		{fmt.Sprintf("{list_file: %s, key_file: %s, refresh: 1m}", listFile, keyFile), "federation.refresh: only used with federation.list_url"},
	} {
		p := filepath.Join(t.TempDir(), "gateway.yaml")
		writeConfig(t, p, "database: x.db\nfederation: "+tc.fed+"\n"+route)
		cfg, err := loadGatewayConfig(p)
		if err == nil {
			err = cfg.check(t.Context(), slog.New(slog.DiscardHandler))
		}
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.fed, err, tc.want)
		}
	}
	// The same with the list server's CA: it starts.
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	writeConfig(t, p, fmt.Sprintf("database: x.db\nfederation: {list_url: '%s/list.jws', key_file: %s, ca_file: %s}\n%s", ls.URL, keyFile, ls.caFile, route))
	cfg, err := loadGatewayConfig(p)
	if err == nil {
		err = cfg.check(t.Context(), slog.New(slog.DiscardHandler))
	}
	if err != nil {
		t.Fatal(err)
	}
}
