package mailbridge_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestAllowSendersAuthenticated: a route's AllowSenders lets in only a sender whose identity
// is proven, against a real DNS server on loopback: the From address of a domain that passes
// DMARC, or that has no DMARC record and an aligned SPF or DKIM pass; the SMTP AUTH user; a
// trusted relay's dmarc=pass. A forged From of an allowed address, an allowed envelope sender
// with another From, and a bounce are refused with 550 5.7.1 (at DATA, the recipient is taken
// at RCPT); a DNS failure defers with 451 4.4.3; postmaster@ still reaches the route.
func TestAllowSendersAuthenticated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	zone := startDNS(t)
	// agency.example sends only from 127.0.0.2; mail from 127.0.0.1 in its name is forged.
	zone.TXT("agency.example", "v=spf1 ip4:127.0.0.2 -all")
	zone.TXT("_dmarc.agency.example", "v=DMARC1; p=none")
	// partner.example publishes SPF and no DMARC record: an aligned SPF pass proves it.
	zone.TXT("partner.example", "v=spf1 ip4:127.0.0.2 -all")
	// signed.example only signs (DKIM), no DMARC record.
	key := dkimKey(t, zone, "signed.example")
	zone.ServFail("_dmarc.flaky.example")
	zone.TXT("flaky.example", "v=spf1 ip4:127.0.0.2 -all")

	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "registry@agency.example", Room: string(room),
			AllowSenders: []string{"system@agency.example", "@partner.example", "@signed.example", "@flaky.example", "submitter@agency.example"}},
		mailbridge.Route{Address: "open@agency.example", Room: string(room)},
	)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := testCert(t)
	submitter := func(_ context.Context, user, password string) error {
		if (user == "submitter@agency.example" || user == "clerk@elsewhere.example") && password == "right" {
			return nil
		}
		return mailbridge.ErrAuthFailed
	}
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, Resolver: mailbridge.DNSServer(zone.Addr),
		TLSConfig: serverTLS, Authenticate: submitter, TrustedRelays: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}})
	inbox := matrixtest.NewRecorder(t, officer, room)
	notAllowed := smtp.EnhancedCode{5, 7, 1}
	rcpt := []string{"registry@agency.example"}

	// Forged: the allowed address as envelope sender and From, from a host its SPF does not name.
	c := dialFrom(t, addr, "127.0.0.1")
	if err := c.Mail("system@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("registry@agency.example", nil); err != nil {
		t.Fatalf("RCPT is taken; who sent the mail is known only after DATA: %v", err)
	}
	_ = c.Reset()
	wantCode(t, "forged From of an allowed address", send(c, "system@agency.example", rcpt, mail("System <system@agency.example>", "Forged system", "forged-1@agency.example", "x")), 550, notAllowed)
	wantCode(t, "a bounce with a forged From", send(c, "", rcpt, mail("System <system@agency.example>", "Forged bounce", "forged-2@agency.example", "x")), 550, notAllowed)
	if err := send(c, "system@agency.example", []string{"postmaster@agency.example"}, mail("System <system@agency.example>", "To the postmaster", "pm-1@agency.example", "x")); err != nil {
		t.Fatalf("postmaster@ from anyone: %v", err)
	}
	inbox.Wait(t, subjectLine("To the postmaster"))
	// DKIM: an aligned signature proves signed.example wherever the mail came from.
	if err := send(c, "bounces@mailer.example", rcpt, dkimSign(t, key, "signed.example", mail("Desk <desk@signed.example>", "Signed", "signed-1@signed.example", "x"))); err != nil {
		t.Fatalf("aligned DKIM pass: %v", err)
	}
	inbox.Wait(t, subjectLine("Signed"))

	// From the host agency.example's SPF names: the same mail passes; another From does not.
	c = dialFrom(t, addr, "127.0.0.2")
	if err := send(c, "system@agency.example", rcpt, mail("System <system@agency.example>", "Real system", "real-1@agency.example", "x")); err != nil {
		t.Fatalf("the allowed address, proven by DMARC: %v", err)
	}
	inbox.Wait(t, subjectLine("Real system"))
	wantCode(t, "an allowed envelope sender with another From", send(c, "system@agency.example", rcpt, mail("Boss <boss@bank.example>", "Other From", "other-1@agency.example", "x")), 550, notAllowed)
	wantCode(t, "another address of an allowed domain", send(c, "anna@agency.example", rcpt, mail("Anna <anna@agency.example>", "Anna", "anna-1@agency.example", "x")), 550, notAllowed)
	if err := send(c, "news@partner.example", rcpt, mail("Partner <news@partner.example>", "Partner", "partner-1@partner.example", "x")); err != nil {
		t.Fatalf("aligned SPF pass of a domain without DMARC: %v", err)
	}
	inbox.Wait(t, subjectLine("Partner"))
	wantCode(t, "DMARC temperror", send(c, "a@flaky.example", rcpt, mail("A <a@flaky.example>", "Flaky", "flaky-1@flaky.example", "x")), 451, smtp.EnhancedCode{4, 4, 3})
	if err := send(c, "system@agency.example", []string{"open@agency.example"}, mail("Boss <boss@bank.example>", "Open route", "open-1@agency.example", "x")); err != nil {
		t.Fatalf("a route without AllowSenders: %v", err)
	}
	inbox.Wait(t, subjectLine("Open route"))

	// SMTP AUTH: the authenticated user is a proven sender, whatever the From says.
	for _, tc := range []struct {
		user string
		ok   bool
	}{{"submitter@agency.example", true}, {"clerk@elsewhere.example", false}} {
		c := dialStartTLS(t, addr, clientTLS)
		if err := c.Auth(sasl.NewPlainClient("", tc.user, "right")); err != nil {
			t.Fatal(err)
		}
		err := send(c, "noreply@app.example", rcpt, mail("App <noreply@app.example>", "Submitted by "+tc.user, "auth-"+tc.user, "x"))
		if !tc.ok {
			wantCode(t, "an authenticated user not on the list", err, 550, notAllowed)
			continue
		}
		if err != nil {
			t.Fatalf("AUTH as %s: %v", tc.user, err)
		}
		inbox.Wait(t, subjectLine("Submitted by "+tc.user))
	}

	// A trusted relay's Authentication-Results: its dmarc=pass stands for the mail it relays,
	// and the same header from any other client proves nothing.
	relayed := "Authentication-Results: relay.agency.example; dmarc=pass header.from=agency.example\r\n" +
		mail("System <system@agency.example>", "Relayed", "relayed-1@agency.example", "x")
	wantCode(t, "a relay's header from a client that is not one", send(dialFrom(t, addr, "127.0.0.1"), "system@agency.example", rcpt, relayed), 550, notAllowed)
	if err := send(dialFrom(t, addr, "127.0.0.3"), "system@agency.example", rcpt, relayed); err != nil {
		t.Fatalf("through the trusted relay: %v", err)
	}
	inbox.Wait(t, subjectLine("Relayed"))
}

// dialFrom opens an SMTP connection to addr from the loopback address from (127.0.0.0/8 is
// all loopback on Linux) and says EHLO.
func dialFrom(t *testing.T, addr, from string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}
