package mailbridge_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestIMAPRetryChecksAgain: mail taken from a real Dovecot mailbox while DNS could not answer
// for its sender's domain is dead-lettered for a route that rejects what fails DMARC, and a
// retry once DNS answers checks it again: a signed mail is posted, shown as verified; a forged
// one is dead again, now as forged, not posted (before, a retry posted both as they were). A
// second retry of the forged one is an admin's decision and posts it, shown as forged. One
// whose DNS still fails stays dead, to be retried again. A mail for one room through two
// routes is checked again by the one that refused it.
func TestIMAPRetryChecksAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	zone := startDNS(t)
	key := dkimKey(t, zone, "later.example")
	for _, d := range []string{"later.example", "forged.example", "down.example"} {
		zone.ServFail("_dmarc." + d)
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	inbox := matrixtest.NewRecorder(t, officer, room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "reject@agency.example", Room: string(room), SenderPolicy: mailbridge.SenderReject},
		mailbridge.Route{Address: "mark@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := startGateway(t, mailbridge.Options{Client: bot, Router: router, Resolver: mailbridge.DNSServer(zone.Addr)})
	imapSrv := startDovecot(t, dovecotOptions{})
	c := imapSrv.Client(t)
	mails := map[string]string{ // Return-Path: the mail
		"signed@x.example": dkimSign(t, key, "later.example", policyMail("desk@later.example", "reject@agency.example", "Signed while DNS was down")),
		"forged@x.example": policyMail("boss@forged.example", "reject@agency.example", "Forged while DNS was down"),
		"down@x.example":   policyMail("desk@down.example", "reject@agency.example", "DNS still down"),
		// For the room through two routes, the first of which only marks: the stricter
		// route refused it, and it is by that route that the retry checks it again.
		"two@x.example": policyMail("boss@forged.example", "mark@agency.example, reject@agency.example", "Forged to two routes"),
	}
	for from, raw := range mails {
		appendMail(t, c, "INBOX", "Return-Path: <"+from+">\r\n"+raw)
	}
	defer runPoller(t, g, mailbridge.IMAPOptions{Addr: imapSrv.Addr, Security: "none", Username: imapSrv.User, Password: imapSrv.Password,
		Mailboxes: []mailbridge.IMAPMailbox{{}}, PollInterval: 200 * time.Millisecond, MinReconnectDelay: 50 * time.Millisecond})()

	// dead waits until the deliveries from the Return-Paths named are dead with reasons that
	// start as given, and returns the spool IDs of all three.
	dead := func(want map[string]string) map[string]int64 {
		t.Helper()
		var ids map[string]int64
		matrixtest.Eventually(t, func() error {
			u, err := g.Undelivered(t.Context())
			if err != nil {
				return err
			}
			ids = map[string]int64{}
			got := map[string]string{}
			for _, d := range u {
				ids[d.MailFrom] = d.ID
				if d.Dead {
					got[d.MailFrom] = d.LastError
				}
			}
			for from, reason := range want {
				if !strings.HasPrefix(got[from], reason) {
					return fmt.Errorf("%s: dead letter %q, want %q", from, got[from], reason)
				}
			}
			return nil
		})
		return ids
	}
	const unsure, forged = "sender authentication could not be completed this time", "sender authentication failed (DMARC fail)"
	ids := dead(map[string]string{"signed@x.example": unsure, "forged@x.example": unsure, "down@x.example": unsure, "two@x.example": unsure})

	// DNS answers again, but for down.example.
	for _, d := range []string{"later.example", "forged.example"} {
		zone.Heal("_dmarc." + d)
		zone.TXT("_dmarc."+d, "v=DMARC1; p=reject")
	}
	for _, from := range []string{"signed@x.example", "forged@x.example", "down@x.example", "two@x.example"} {
		if err := g.Retry(t.Context(), ids[from]); err != nil {
			t.Fatal(err)
		}
	}
	if e := inbox.Wait(t, subjectLine("Signed while DNS was down")); !strings.Contains(e.Text(), "Sender check: DMARC pass") {
		t.Errorf("the signed mail, retried, shows\n%s\nwant a DMARC pass", e.Text())
	}
	dead(map[string]string{"forged@x.example": forged, "down@x.example": unsure, "two@x.example": forged})
	for _, subject := range []string{"Forged while DNS was down", "Forged to two routes"} {
		if n := count(inbox, subjectLine(subject)); n != 0 {
			t.Fatalf("%s: posted on a retry that found it forged (%d times)", subject, n)
		}
	}

	// The admin retries the forged mail once more: that posts it, shown as forged.
	if err := g.Retry(t.Context(), ids["forged@x.example"]); err != nil {
		t.Fatal(err)
	}
	if e := inbox.Wait(t, subjectLine("Forged while DNS was down")); !strings.Contains(e.Text(), "Sender check: DMARC fail") {
		t.Errorf("the forged mail, retried by an admin, shows\n%s\nwant a DMARC fail", e.Text())
	}
	if n := count(inbox, subjectLine("Signed while DNS was down")); n != 1 {
		t.Errorf("the signed mail was posted %d times, want once", n)
	}
}
