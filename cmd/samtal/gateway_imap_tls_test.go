package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"

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
	loginAs(t, srv, "mailbot")
	officer := srv.Client(t, "officer")
	room := sharedRoom(t, officer)
	imap := dovecottest.Start(t, dovecottest.Options{TLS: true})
	ic := imap.Client(t)
	for _, mb := range []string{"StartTLS", "Untrusted"} {
		if err := ic.Create(mb, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GW_TEST_IMAP_PASSWORD", imap.Password)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(`database: ${SAMTAL_DB}
matrix: {e2ee: false}
smtp: {listen: "127.0.0.1:0", domain: mx.test}
http: {listen: "127.0.0.1:0"}
imap:
  - {addr: "%[1]s", security: tls, ca_file: %[3]s, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: INBOX, address: open@agency.example}]}
  - {addr: "%[2]s", security: starttls, ca_file: %[3]s, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: StartTLS, address: open@agency.example}]}
  - {addr: "%[1]s", security: tls, username: %[4]s, password: "${GW_TEST_IMAP_PASSWORD}",
     mailboxes: [{name: Untrusted, address: open@agency.example}]}
routes:
  - {address: open@agency.example, room: "%[5]s"}
`, imap.TLSAddr, imap.Addr, imap.CAFile, imap.User, room))

	e, out, errOut := testEnv()
	var logs syncBuffer
	e.log = slog.New(slog.NewTextHandler(&logs, nil))
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

	for _, mb := range []string{"INBOX", "StartTLS", "Untrusted"} {
		dovecottest.Append(t, ic, mb, "From: Anna <anna@agency.example>\r\nTo: open@agency.example\r\nSubject: TLS "+mb+"\r\nMessage-ID: <tls-"+mb+"@agency.example>\r\n\r\nHello\r\n")
	}
	for _, mb := range []string{"INBOX", "StartTLS"} {
		matrixtest.WaitEvent(t, officer, room, func(e *event.Event) bool {
			return e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "Subject: TLS "+mb+"\n")
		})
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
	if strings.Contains(logs.String(), imap.Password) || strings.Contains(out.String(), imap.Password) || strings.Contains(errOut.String(), imap.Password) {
		t.Error("the IMAP password is in the gateway's output")
	}
}
