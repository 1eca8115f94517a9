package mailbridge_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// dkimSign signs a mail for domain with selector "sel" and returns it signed.
// dkimKey makes an Ed25519 signing key and publishes it in zone as selector "sel" of each of
// domains, for dkimSign.
func dkimKey(t *testing.T, zone *dnsZone, domains ...string) ed25519.PrivateKey {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range domains {
		zone.TXT("sel._domainkey."+d, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	}
	return key
}

func dkimSign(t *testing.T, key ed25519.PrivateKey, domain, raw string) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(raw), &dkim.SignOptions{Domain: domain, Selector: "sel", Signer: key,
		HeaderKeys: []string{"From", "Subject", "Message-ID"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestSenderAuthentication: SPF, DKIM and DMARC against a real DNS server on loopback. Each
// mail's verdict is written on top of it as the gateway's Authentication-Results, and each
// route's SenderPolicy decides: a forged From (DMARC fail) is refused by a reject route with
// 550 5.7.1, marked by a mark route and accepted as overridden by an accept route; a DKIM
// signature over a modified body fails; strict alignment is honoured; a DNS failure is a
// temperror, 451 4.4.3 on a reject route; Authentication-Results the client wrote are renamed
// unless it is a trusted relay; and no name from the mail's content is looked up.
func TestSenderAuthentication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	zone := startDNS(t)
	zone.TXT("agency.example", "v=spf1 ip4:127.0.0.1 -all")
	zone.TXT("_dmarc.agency.example", "v=DMARC1; p=reject")
	zone.TXT("bank.example", "v=spf1 ip4:192.0.2.1 -all")
	zone.TXT("_dmarc.bank.example", "v=DMARC1; p=reject")
	key := dkimKey(t, zone, "signed.example")
	zone.TXT("_dmarc.signed.example", "v=DMARC1; p=quarantine; adkim=s")
	zone.ServFail("_dmarc.flaky.example")

	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	routes := []mailbridge.Route{
		{Address: "marked@agency.example", Room: string(room)},
		{Address: "strict@agency.example", Room: string(room), SenderPolicy: mailbridge.SenderReject},
		{Address: "open@agency.example", Room: string(room), SenderPolicy: mailbridge.SenderAccept},
	}
	router, err := mailbridge.NewRouter(routes...)
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, "spool.db")
	metrics := &metricsRecorder{}
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: db, Resolver: mailbridge.DNSServer(zone.Addr), Metrics: metrics})
	inbox := matrixtest.NewRecorder(t, officer, room)
	c := dial(t, addr)

	// verdict sends a mail that must be accepted and returns the gateway's verdict on it.
	verdict := func(what, from, to, raw string) mailbridge.AuthResults {
		t.Helper()
		if err := send(c, from, []string{to}, raw); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ar, ok := mailbridge.ReadAuthResults(lastSpooled(t, db), "mx.test")
		if !ok {
			t.Fatalf("%s: no Authentication-Results of ours in\n%s", what, lastSpooledRaw(t, db))
		}
		return ar
	}

	// SPF pass for agency.example, aligned (relaxed) with a From on a subdomain, whose DMARC
	// record is the organizational domain's.
	ar := verdict("aligned SPF", "anna@agency.example", "strict@agency.example",
		mail("Anna <anna@mail.agency.example>", "Authenticated", "auth-1@agency.example", "hello"))
	if ar.SPF != "pass" || ar.DMARC != "pass" || ar.From != "mail.agency.example" || !ar.Verified() {
		t.Errorf("aligned SPF: %+v", ar)
	}
	inbox.Wait(t, subjectLine("Authenticated"))

	// A forged From: the bank publishes p=reject and the mail comes from elsewhere. It also
	// carries a forged Authentication-Results in our name, and remote content.
	forged := "Authentication-Results: mx.test; spf=pass smtp.mailfrom=bank.example; dmarc=pass header.from=bank.example\r\n" +
		"From: CEO <ceo@bank.example>\r\nSubject: Forged\r\nMessage-ID: <forged@bank.example>\r\nContent-Type: text/html\r\n\r\n" +
		`<p>Pay now: <a href="http://phish.example/pay">here</a><img src="http://tracker.example/pixel.png"></p>` + "\r\n"
	wantCode(t, "forged From on a reject route", send(c, "mallory@evil.example", []string{"strict@agency.example"}, forged), 550, smtp.EnhancedCode{5, 7, 1})
	ar = verdict("forged From on a mark route", "mallory@evil.example", "marked@agency.example", forged)
	if ar.DMARC != "fail" || ar.From != "bank.example" || ar.Overridden || ar.Verified() {
		t.Errorf("forged From, marked: %+v", ar)
	}
	stored := lastSpooledRaw(t, db)
	if !strings.Contains(stored, "\r\nX-Untrusted-Authentication-Results: mx.test; spf=pass") || strings.Count(stored, "\nAuthentication-Results:")+boolInt(strings.HasPrefix(stored, "Authentication-Results:")) != 1 {
		t.Errorf("the client's Authentication-Results is not renamed:\n%s", stored)
	}
	if !strings.HasPrefix(stored, "Return-Path: <mallory@evil.example>\r\nAuthentication-Results: mx.test;") {
		t.Errorf("stored mail starts %q", stored[:min(len(stored), 120)])
	}
	ar = verdict("forged From on an accept route", "mallory@evil.example", "open@agency.example", forged)
	if ar.DMARC != "fail" || !ar.Overridden {
		t.Errorf("forged From, accepted: %+v", ar)
	}

	// DKIM: a good signature passes DMARC without SPF; the same signature over a changed
	// body fails, and so does a subdomain under strict alignment.
	signed := dkimSign(t, key, "signed.example", mail("News <news@signed.example>", "Signed", "signed-1@signed.example", "original body"))
	ar = verdict("DKIM pass", "bounces@esp.example", "strict@agency.example", signed)
	if ar.DKIM != "pass" || ar.DMARC != "pass" || ar.SPF != "none" {
		t.Errorf("DKIM pass: %+v", ar)
	}
	tampered := strings.Replace(signed, "original body", "changed body", 1)
	wantCode(t, "DKIM over a modified body, reject route", send(c, "bounces@esp.example", []string{"strict@agency.example"}, tampered), 550, smtp.EnhancedCode{5, 7, 1})
	ar = verdict("DKIM over a modified body", "bounces@esp.example", "marked@agency.example", tampered)
	if ar.DKIM != "fail" || ar.DMARC != "fail" {
		t.Errorf("modified body: %+v", ar)
	}
	sub := dkimSign(t, key, "signed.example", mail("News <news@sub.signed.example>", "Strict", "strict-1@signed.example", "x"))
	ar = verdict("strict alignment", "bounces@esp.example", "marked@agency.example", sub)
	if ar.DKIM != "pass" || ar.DMARC != "fail" {
		t.Errorf("strict DKIM alignment of a subdomain: %+v", ar)
	}

	// A DNS failure: temperror, which a reject route answers with 451 4.4.3.
	flaky := mail("x@flaky.example", "Flaky", "flaky@flaky.example", "x")
	wantCode(t, "DNS failure, reject route", send(c, "x@flaky.example", []string{"strict@agency.example"}, flaky), 451, smtp.EnhancedCode{4, 4, 3})
	if ar = verdict("DNS failure", "x@flaky.example", "marked@agency.example", flaky); ar.DMARC != "temperror" {
		t.Errorf("DNS failure: %+v", ar)
	}

	// The same mail without a Message-ID, once while DNS fails and once after: other
	// Authentication-Results, the same mail, posted once.
	zone.ServFail("_dmarc.again.example")
	again := mail("x@again.example", "Again", "", "same content")
	if ar = verdict("first try", "x@again.example", "marked@agency.example", again); ar.DMARC != "temperror" {
		t.Errorf("first try: %+v", ar)
	}
	zone.Heal("_dmarc.again.example")
	if ar = verdict("second try", "x@again.example", "marked@agency.example", again); ar.DMARC != "none" {
		t.Errorf("second try: %+v", ar)
	}
	if err := send(c, "anna@agency.example", []string{"marked@agency.example"}, mail("anna@agency.example", "Marker", "marker@agency.example", "x")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Marker"))
	if n := count(inbox, subjectLine("Again")); n != 1 {
		t.Errorf("the same mail with other Authentication-Results posted %d times, want once", n)
	}

	// What metrics see: the refusals by code, the DMARC results.
	replies, dmarc := metrics.seen()
	if !slices.Contains(replies, 550) || !slices.Contains(replies, 451) || !slices.Contains(replies, 250) {
		t.Errorf("Metrics.SMTPReply saw %v", replies)
	}
	if !slices.Contains(dmarc, "fail") || !slices.Contains(dmarc, "pass") || !slices.Contains(dmarc, "temperror") {
		t.Errorf("Metrics.DMARC saw %v", dmarc)
	}

	// Nothing from the content was looked up, and nothing that is not SPF, DKIM or DMARC.
	for _, name := range zone.Asked() {
		if strings.Contains(name, "phish") || strings.Contains(name, "tracker") {
			t.Errorf("looked up %s from a mail's content", name)
		}
	}

	// A trusted relay: its Authentication-Results stay, and its SPF verdict counts.
	relayDB := openDB(t, "relay.db")
	_, relayAddr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: relayDB, Resolver: mailbridge.DNSServer(zone.Addr),
		TrustedRelays: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	relayed := "Authentication-Results: relay.agency.example; spf=pass smtp.mailfrom=bank.example\r\n" +
		mail("CEO <ceo@bank.example>", "Relayed", "relayed@bank.example", "real")
	if err := send(dial(t, relayAddr), "ceo@bank.example", []string{"strict@agency.example"}, relayed); err != nil {
		t.Fatalf("through a trusted relay: %v", err)
	}
	stored = lastSpooledRaw(t, relayDB)
	if !strings.Contains(stored, "\r\nAuthentication-Results: relay.agency.example; spf=pass") {
		t.Errorf("the relay's Authentication-Results is not kept:\n%s", stored)
	}
	if ar, _ := mailbridge.ReadAuthResults(lastSpooled(t, relayDB), "mx.test"); ar.SPF != "pass" || ar.DMARC != "pass" {
		t.Errorf("through a trusted relay: %+v", ar)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// metricsRecorder is a mailbridge.Metrics that keeps what it is told.
type metricsRecorder struct {
	mu      sync.Mutex
	replies []int
	dmarc   []string
}

func (m *metricsRecorder) SMTPReply(code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replies = append(m.replies, code)
}

func (m *metricsRecorder) Delivery(string) {}

func (m *metricsRecorder) DMARC(result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dmarc = append(m.dmarc, result)
}

func (m *metricsRecorder) seen() ([]int, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.replies), slices.Clone(m.dmarc)
}
