package mailbridge_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestMembersOnlyRoute: a route with MembersOnly takes mail only from an authenticated (DMARC
// pass) address of a member agency of a signed federation list; a member's domain that fails
// DMARC, a verified domain outside the list, and any mail when no list is configured are
// refused with 550 5.7.1, and the route beside it without the option takes them all.
func TestMembersOnlyRoute(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	zone := startDNS(t)
	for _, d := range []string{"agency.example", "outsider.example"} { // both verifiable by SPF from loopback
		zone.TXT(d, "v=spf1 ip4:127.0.0.1 -all")
		zone.TXT("_dmarc."+d, "v=DMARC1; p=reject")
	}
	zone.TXT("member-b.example", "v=spf1 ip4:192.0.2.1 -all") // a member; this mail is not from its servers
	zone.TXT("_dmarc.member-b.example", "v=DMARC1; p=reject")

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := federation.Sign(federation.Document{
		Version: 1, IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour),
		Members: []federation.Member{
			{Name: "Agency A", OrgNumber: "1", Servers: []string{"matrix.agency.example"}, EmailDomains: []string{"agency.example"}, Contact: "ops@agency.example"},
			{Name: "Agency B", OrgNumber: "2", Servers: []string{"matrix.member-b.example"}, EmailDomains: []string{"member-b.example"}, Contact: "ops@member-b.example"},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	list, err := federation.Parse(signed, key.Public(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}

	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "cases@agency.example", Room: string(room), MembersOnly: true},
		mailbridge.Route{Address: "open@agency.example", Room: string(room)},
	)
	if err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, officer, room)
	notMember := smtp.EnhancedCode{5, 7, 1}

	t.Run("with the list", func(t *testing.T) {
		_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: openDB(t, "spool.db"), Resolver: mailbridge.DNSServer(zone.Addr), Federation: list})
		c := dial(t, addr)
		if err := send(c, "anna@agency.example", []string{"cases@agency.example"}, mail("Anna <anna@agency.example>", "From a member", "m-1@agency.example", "x")); err != nil {
			t.Fatalf("a verified member's mail: %v", err)
		}
		inbox.Wait(t, subjectLine("From a member"))
		wantCode(t, "a member's domain failing DMARC", send(c, "x@elsewhere.example", []string{"cases@agency.example"}, mail("Boss <boss@member-b.example>", "Forged member", "m-2@member-b.example", "x")), 550, notMember)
		wantCode(t, "a verified domain outside the list", send(c, "eve@outsider.example", []string{"cases@agency.example"}, mail("Eve <eve@outsider.example>", "Outsider", "m-3@outsider.example", "x")), 550, notMember)
		if err := send(c, "eve@outsider.example", []string{"open@agency.example"}, mail("Eve <eve@outsider.example>", "Outsider, open route", "m-4@outsider.example", "x")); err != nil {
			t.Fatalf("the route without MembersOnly: %v", err)
		}
		inbox.Wait(t, subjectLine("Outsider, open route"))
	})
	t.Run("without a list", func(t *testing.T) {
		_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: openDB(t, "spool2.db"), Resolver: mailbridge.DNSServer(zone.Addr)})
		c := dial(t, addr)
		wantCode(t, "a member's mail with no list configured", send(c, "anna@agency.example", []string{"cases@agency.example"}, mail("Anna <anna@agency.example>", "No list", "m-5@agency.example", "x")), 550, notMember)
	})
}
