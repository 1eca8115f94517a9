package mailbridge_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestIMAPRoutePolicy: mail taken from a real Dovecot mailbox goes through its route's
// SenderPolicy and MembersOnly as over SMTP, against a real DNS server on loopback. What SMTP
// refuses (DMARC fail or temperror on a reject route, a sender who is not a verified member on
// a members-only route) is spooled as a dead letter for that room with the reason and counted
// as a dead delivery; what SMTP marks is shown marked in the room, from the gateway's own
// Authentication-Results (one the sender wrote with the gateway's name does not count); the
// trusted mailbox server's SPF pass and dmarc=pass (with a comment in it) count as DMARC pass;
// and a mail for two rooms is dead in the one whose route refuses it and marked in the other.
func TestIMAPRoutePolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	zone := startDNS(t)
	key := dkimKey(t, zone, "signed.example", "agency.example", "outsider.example")
	for _, d := range []string{"signed.example", "agency.example", "outsider.example"} {
		zone.TXT("_dmarc."+d, "v=DMARC1; p=reject")
	}
	zone.TXT("_dmarc.forged.example", "v=DMARC1; p=reject")
	zone.ServFail("_dmarc.unsure.example") // DMARC temperror; nopolicy.example has no record: none
	list := memberList(t, "agency.example")

	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	roomA, roomB := roomWith(t, bot, officer, false), roomWith(t, bot, officer, false)
	inboxA, inboxB := matrixtest.NewRecorder(t, officer, roomA), matrixtest.NewRecorder(t, officer, roomB)
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "reject@agency.example", Room: string(roomA), SenderPolicy: mailbridge.SenderReject},
		mailbridge.Route{Address: "mark@agency.example", Room: string(roomA)},
		mailbridge.Route{Address: "accept@agency.example", Room: string(roomA), SenderPolicy: mailbridge.SenderAccept},
		mailbridge.Route{Address: "members@agency.example", Room: string(roomA), MembersOnly: true},
		mailbridge.Route{Address: "also@agency.example", Room: string(roomB)},
	)
	if err != nil {
		t.Fatal(err)
	}
	metrics := &policyMetrics{}
	g, _ := startGateway(t, mailbridge.Options{Client: bot, Router: router, Resolver: mailbridge.DNSServer(zone.Addr), Federation: list, Metrics: metrics})
	imapSrv := startDovecot(t, dovecotOptions{})
	c := imapSrv.Client(t)

	signed := func(domain, raw string) string { return dkimSign(t, key, domain, raw) }
	const (
		forged    = "DMARC fail (the sender may be forged)"
		overruled = "DMARC fail, accepted by this gateway's policy"
		verified  = "DMARC pass (the sender's domain is verified)"
	)
	// Each mail has a Return-Path of its own, which names it in the spool's list.
	mails := []struct {
		returnPath, subject, raw string
		rooms                    map[id.RoomID]string // the room's sender check when posted, or "dead: " and the reason
	}{
		{"f1@x.example", "Forged to reject", policyMail("boss@forged.example", "reject@agency.example", "Forged to reject"),
			map[id.RoomID]string{roomA: "dead: sender authentication failed (DMARC fail)"}},
		{"f2@x.example", "Forged to mark", policyMail("boss@forged.example", "mark@agency.example", "Forged to mark"),
			map[id.RoomID]string{roomA: forged}},
		{"f3@x.example", "Forged to accept", policyMail("boss@forged.example", "accept@agency.example", "Forged to accept"),
			map[id.RoomID]string{roomA: overruled}},
		{"s1@x.example", "Signed to reject", signed("signed.example", policyMail("desk@signed.example", "reject@agency.example", "Signed to reject")),
			map[id.RoomID]string{roomA: verified}},
		{"n1@x.example", "No policy to reject", policyMail("desk@nopolicy.example", "reject@agency.example", "No policy to reject"),
			map[id.RoomID]string{roomA: "DMARC none (the sender is not verified)"}},
		{"u1@x.example", "Unsure to reject", policyMail("desk@unsure.example", "reject@agency.example", "Unsure to reject"),
			map[id.RoomID]string{roomA: "dead: sender authentication could not be completed this time"}},
		{"m1@x.example", "Member", signed("agency.example", policyMail("anna@agency.example", "members@agency.example", "Member")),
			map[id.RoomID]string{roomA: verified}},
		{"m2@x.example", "Outsider", signed("outsider.example", policyMail("eve@outsider.example", "members@agency.example", "Outsider")),
			map[id.RoomID]string{roomA: "dead: sender is not a verified member of the federation"}},
		{"m3@x.example", "Forged member", policyMail("anna@agency.example", "members@agency.example", "Forged member"),
			map[id.RoomID]string{roomA: "dead: sender is not a verified member of the federation"}},
		{"o1@x.example", "Our name forged",
			"Authentication-Results: mx.test; dmarc=pass header.from=forged.example\r\n" + policyMail("boss@forged.example", "mark@agency.example", "Our name forged"),
			map[id.RoomID]string{roomA: forged}},
		{"t1@x.example", "Server's SPF pass",
			"Authentication-Results: mx.agency.example; spf=pass smtp.mailfrom=bounce@mail.forged.example\r\n" + policyMail("boss@forged.example", "reject@agency.example", "Server's SPF pass"),
			map[id.RoomID]string{roomA: verified}},
		{"t2@x.example", "Server's DMARC pass",
			"Authentication-Results: mx.agency.example; dmarc=pass (p=reject dis=none) header.from=forged.example\r\n" + policyMail("boss@forged.example", "reject@agency.example", "Server's DMARC pass"),
			map[id.RoomID]string{roomA: verified}},
		{"r1@x.example", "Two rooms", policyMail("boss@forged.example", "reject@agency.example, also@agency.example", "Two rooms"),
			map[id.RoomID]string{roomA: "dead: sender authentication failed (DMARC fail)", roomB: forged}},
	}
	for _, m := range mails {
		appendMail(t, c, "INBOX", "Return-Path: <"+m.returnPath+">\r\n"+m.raw)
	}
	defer runPoller(t, g, mailbridge.IMAPOptions{Addr: imapSrv.Addr, Security: "none", Username: imapSrv.User, Password: imapSrv.Password,
		Mailboxes: []mailbridge.IMAPMailbox{{}}, TrustAuthServID: "mx.agency.example",
		PollInterval: 200 * time.Millisecond, MinReconnectDelay: 50 * time.Millisecond})()

	inboxes := map[id.RoomID]*matrixtest.Recorder{roomA: inboxA, roomB: inboxB}
	wantDead := 0
	for _, m := range mails {
		for room, want := range m.rooms {
			if strings.HasPrefix(want, "dead: ") {
				wantDead++
				continue
			}
			e := inboxes[room].Wait(t, subjectLine(m.subject))
			if !strings.Contains(e.Text(), "Sender check: "+want) {
				t.Errorf("%s: the room shows\n%s\nwant the sender check %q", m.subject, e.Text(), want)
			}
		}
	}
	matrixtest.Eventually(t, func() error {
		u, err := g.Undelivered(t.Context())
		if err != nil {
			return err
		}
		dead := map[string]string{} // Return-Path and room: reason
		for _, d := range u {
			if d.Dead {
				dead[d.MailFrom+" "+d.Room] = d.LastError
			}
		}
		for _, m := range mails {
			for room, want := range m.rooms {
				got, ok := dead[m.returnPath+" "+string(room)]
				reason, isDead := strings.CutPrefix(want, "dead: ")
				if ok != isDead || (isDead && !strings.HasPrefix(got, reason)) {
					return fmt.Errorf("%s in %s: dead letter %q, want %q", m.subject, room, got, want)
				}
			}
		}
		return nil
	})
	matrixtest.Eventually(t, func() error {
		if dead, dmarc := metrics.counts(); dead != wantDead || dmarc != len(mails) {
			return fmt.Errorf("metrics: %d dead deliveries and %d DMARC results, want %d and %d", dead, dmarc, wantDead, len(mails))
		}
		return nil
	})
	for _, m := range mails {
		for room, want := range m.rooms {
			if n, wantN := count(inboxes[room], subjectLine(m.subject)), map[bool]int{true: 0, false: 1}[strings.HasPrefix(want, "dead: ")]; n != wantN {
				t.Errorf("%s posted %d times in %s, want %d", m.subject, n, room, wantN)
			}
		}
	}
}

// policyMail is a small mail from one address to others, its Message-ID made from subject.
func policyMail(from, to, subject string) string {
	msgID := strings.ToLower(strings.NewReplacer(" ", "-", "'", "").Replace(subject)) + "@policy.test"
	return fmt.Sprintf("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nx\r\n", from, to, subject, msgID)
}

// memberList is a signed federation list, verified, whose one member has the email domains.
func memberList(t *testing.T, domains ...string) *federation.List {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := federation.Sign(federation.Document{
		Version: 1, IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour),
		Members: []federation.Member{{Name: "Agency A", OrgNumber: "1", Servers: []string{"matrix.agency.example"}, EmailDomains: domains, Contact: "ops@agency.example"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	list, err := federation.Parse(signed, key.Public(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// policyMetrics is a mailbridge.Metrics that counts dead deliveries and DMARC results.
type policyMetrics struct {
	mu          sync.Mutex
	dead, dmarc int
}

func (m *policyMetrics) SMTPReply(int) {}

func (m *policyMetrics) Delivery(outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if outcome == mailbridge.OutcomeDead {
		m.dead++
	}
}

func (m *policyMetrics) DMARC(string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dmarc++
}

func (m *policyMetrics) counts() (dead, dmarc int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dead, m.dmarc
}
