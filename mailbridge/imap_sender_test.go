package mailbridge_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestIMAPAllowSendersProven: mail taken from a real Dovecot mailbox for a route with
// AllowSenders passes only with a proven sender, against a real DNS server on loopback: a DKIM
// signature the gateway verifies itself, aligned with From, or the mailbox server's own
// top-most Authentication-Results (the authserv-id the poller trusts). A forged Return-Path
// and From, an Authentication-Results of another server, one of the trusted name under the
// server's own, a signature over a modified body, a pass the From domain's strict alignment
// (adkim=s, aspf=s) does not count, and a proven sender not on the list are each spooled as a
// dead letter with the reason, not posted.
func TestIMAPAllowSendersProven(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	zone := startDNS(t)
	zone.TXT("_dmarc.agency.example", "v=DMARC1; p=reject")
	key := dkimKey(t, zone, "signed.example")
	zone.TXT("_dmarc.signed.example", "v=DMARC1; p=reject")
	zone.TXT("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s")

	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	inbox := matrixtest.NewRecorder(t, officer, room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room),
		AllowSenders: []string{"system@agency.example", "@signed.example", "@strict.example"}})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := startGateway(t, mailbridge.Options{Client: bot, Router: router, Resolver: mailbridge.DNSServer(zone.Addr)})
	imapSrv := startDovecot(t, dovecotOptions{})
	c := imapSrv.Client(t)

	// Each mail has a Return-Path of its own, which names it in the spool's list.
	mails := []struct {
		returnPath, subject, raw string
		refused                  string // the dead letter's reason; "" when it is posted
	}{
		{"forged@agency.example", "Forged", mail("System <system@agency.example>", "Forged", "forged@agency.example", "x"), "sender not proven"},
		{"elsewhere@agency.example", "Other server",
			"Authentication-Results: mx.evil.example; dmarc=pass header.from=agency.example\r\n" +
				mail("System <system@agency.example>", "Other server", "other-server@agency.example", "x"), "sender not proven"},
		{"under@agency.example", "Under the server's own",
			"Authentication-Results: mx.agency.example; dmarc=fail header.from=agency.example\r\n" +
				"Authentication-Results: mx.agency.example; dmarc=pass header.from=agency.example\r\n" +
				mail("System <system@agency.example>", "Under the server's own", "under@agency.example", "x"), "sender not proven"},
		{"modified@mailer.example", "Modified body",
			strings.Replace(dkimSign(t, key, "signed.example", mail("Desk <desk@signed.example>", "Modified body", "modified@signed.example", "Pay 10 kr")), "Pay 10 kr", "Pay 99 kr", 1), "sender not proven"},
		{"anna@agency.example", "Not on the list",
			"Authentication-Results: mx.agency.example; dmarc=pass header.from=agency.example\r\n" +
				mail("Anna <anna@agency.example>", "Not on the list", "anna@agency.example", "x"), "sender not allowed"},
		{"bounces@mailer.example", "Signed", dkimSign(t, key, "signed.example", mail("Desk <desk@signed.example>", "Signed", "signed@signed.example", "x")), ""},
		{"system@agency.example", "Server says pass",
			"Authentication-Results: mx.agency.example;\r\n dmarc=pass header.from=agency.example\r\n" +
				mail("System <system@agency.example>", "Server says pass", "pass@agency.example", "x"), ""},
		{"dkim-ar@agency.example", "Server's DKIM pass",
			"Authentication-Results: mx.agency.example; dkim=pass header.d=mail.agency.example\r\n" +
				mail("System <system@agency.example>", "Server's DKIM pass", "dkim-ar@agency.example", "x"), ""},
		{"system@mail.agency.example", "Server's SPF pass",
			"Authentication-Results: mx.agency.example; spf=pass smtp.mailfrom=system@mail.agency.example\r\n" +
				mail("System <system@agency.example>", "Server's SPF pass", "spf-ar@agency.example", "x"), ""},
		{"unaligned@agency.example", "Server's unaligned DKIM pass",
			"Authentication-Results: mx.agency.example; dkim=pass header.d=mailer.example\r\n" +
				mail("System <system@agency.example>", "Server's unaligned DKIM pass", "unaligned@agency.example", "x"), "sender not proven"},
		// strict.example's DMARC record asks for strict alignment: a pass of a subdomain,
		// aligned only in relaxed mode, proves nothing (it did before).
		{"strict-dkim@strict.example", "Strict, subdomain DKIM pass",
			"Authentication-Results: mx.agency.example; dkim=pass header.d=mail.strict.example\r\n" +
				mail("Desk <desk@strict.example>", "Strict, subdomain DKIM pass", "strict-dkim@strict.example", "x"), "sender not proven"},
		{"desk@mail.strict.example", "Strict, subdomain SPF pass",
			"Authentication-Results: mx.agency.example; spf=pass smtp.mailfrom=desk@mail.strict.example\r\n" +
				mail("Desk <desk@strict.example>", "Strict, subdomain SPF pass", "strict-spf@strict.example", "x"), "sender not proven"},
		{"exact@strict.example", "Strict, exact DKIM pass",
			"Authentication-Results: mx.agency.example; dkim=pass header.d=strict.example\r\n" +
				mail("Desk <desk@strict.example>", "Strict, exact DKIM pass", "strict-exact@strict.example", "x"), ""},
	}
	for _, m := range mails {
		appendMail(t, c, "INBOX", "Return-Path: <"+m.returnPath+">\r\n"+m.raw)
	}
	defer runPoller(t, g, mailbridge.IMAPOptions{Addr: imapSrv.Addr, Security: "none", Username: imapSrv.User, Password: imapSrv.Password,
		Mailboxes: []mailbridge.IMAPMailbox{{Address: "cases@agency.example", Flag: `\Seen`}}, TrustAuthServID: "mx.agency.example",
		PollInterval: 200 * time.Millisecond, MinReconnectDelay: 50 * time.Millisecond})()

	for _, m := range mails {
		if m.refused == "" {
			inbox.Wait(t, subjectLine(m.subject))
		}
	}
	matrixtest.Eventually(t, func() error {
		u, err := g.Undelivered(t.Context())
		if err != nil {
			return err
		}
		dead := map[string]string{}
		for _, d := range u {
			if d.Dead {
				dead[d.MailFrom] = d.LastError
			}
		}
		for _, m := range mails {
			if got, want := dead[m.returnPath], m.refused; (want == "") != (got == "") || !strings.HasPrefix(got, want) {
				return fmt.Errorf("%s: dead letter %q, want %q", m.subject, got, want)
			}
		}
		return nil
	})
	for _, m := range mails {
		if n, want := count(inbox, subjectLine(m.subject)), map[bool]int{true: 1, false: 0}[m.refused == ""]; n != want {
			t.Errorf("%s posted %d times, want %d", m.subject, n, want)
		}
	}
}
