package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/internal/dovecottest"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestGatewayIMAPCAFile: against a real Dovecot with TLS and a certificate from a test CA,
// imap[].ca_file makes the poller trust it, over implicit TLS and over STARTTLS; without it
// the poller does not connect, and logs an error naming the certificate problem (and how to
// fix it), never the password.
func TestGatewayIMAPCAFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	dir := t.TempDir()
	srv := matrixtest.NewServer(t)
	officer, room := mailRoom(t, srv, srv.URL)
	imap := dovecottest.Start(t, dovecottest.Options{TLS: true})
	ic := imap.Client(t)
	for _, mb := range []string{"StartTLS", "Untrusted"} {
		if err := ic.Create(mb, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GW_TEST_IMAP_PASSWORD", imap.Password)
	cfgPath := writeGatewayConfig(t, dir, fmt.Sprintf(`imap:
  - {addr: "%[1]s", security: tls, ca_file: %[3]s, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: INBOX, address: open@agency.example}]}
  - {addr: "%[2]s", security: starttls, ca_file: %[3]s, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: StartTLS, address: open@agency.example}]}
  - {addr: "%[1]s", security: tls, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: Untrusted, address: open@agency.example}]}
routes:
  - {address: open@agency.example, room: "%[5]s"}
`, imap.TLSAddr, imap.Addr, imap.CAFile, imap.User, room))

	gw := serveGateway(t, cfgPath)
	logs := gw.logs

	for _, mb := range []string{"INBOX", "StartTLS", "Untrusted"} {
		dovecottest.Append(t, ic, mb, "From: Anna <anna@agency.example>\r\nTo: open@agency.example\r\nSubject: TLS "+mb+"\r\nMessage-ID: <tls-"+mb+"@agency.example>\r\n\r\nHello\r\n")
	}
	for _, mb := range []string{"INBOX", "StartTLS"} {
		waitBody(t, officer, room, "Subject: TLS "+mb+"\n")
	}
	matrixtest.Eventually(t, func() error {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "mailbox=Untrusted") && strings.Contains(line, "certificate is not trusted") &&
				strings.Contains(line, "ca_file") && strings.Contains(line, "x509: certificate signed by unknown authority") {
				return nil
			}
		}
		return fmt.Errorf("no error about the certificate of the mailbox without ca_file in the log:\n%s", logs.String())
	})
	for _, line := range strings.Split(logs.String(), "\n") {
		if (strings.Contains(line, "mailbox=INBOX") || strings.Contains(line, "mailbox=StartTLS")) && strings.Contains(line, "certificate") {
			t.Errorf("a poller with ca_file logged a certificate error: %s", line)
		}
	}
	if strings.Contains(logs.String(), imap.Password) || strings.Contains(gw.out.String(), imap.Password) || strings.Contains(gw.errOut.String(), imap.Password) {
		t.Error("the IMAP password is in the gateway's output")
	}
}
