package mailbridge_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// TestBarePostmaster: RCPT TO:<Postmaster> without a domain, which RFC 5321 4.5.1 requires a
// server to accept (go-smtp up to v0.25 refused it with 501), is taken in any case and goes
// where postmaster@ of the first route's domain goes, past that route's allow-list; with
// Options.PostmasterRoom, there. MAIL FROM:<Postmaster> is still no valid reverse-path (501).
func TestBarePostmaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	s := newStage(t)
	desk := roomWith(t, s.bot, s.officer, false)
	routes := []mailbridge.Route{
		{Address: "registry@agency.example", Room: string(s.room), AllowSenders: []string{"system@agency.example"}},
		{Address: "desk@second.example", Room: string(desk)},
	}
	for _, tc := range []struct {
		name string
		opts mailbridge.Options
		want id.RoomID
	}{
		{"first route's domain", mailbridge.Options{DB: openDB(t, "spool1.db")}, s.room},
		{"PostmasterRoom", mailbridge.Options{DB: openDB(t, "spool2.db"), PostmasterRoom: string(desk)}, desk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.start(t, tc.opts, "", routes...)
			r := dialRaw(t, s.addr)
			r.write("EHLO client.test\r\n")
			r.expect("EHLO", 250)
			r.write("MAIL FROM:<Postmaster>\r\n")
			r.expect("MAIL FROM:<Postmaster>", 501)
			for _, rcpt := range []string{"Postmaster", "postmaster"} {
				subject := "Bare " + rcpt + " " + tc.name
				r.write("MAIL FROM:<stranger@outside.example>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n" +
					mail("Stranger <stranger@outside.example>", subject, "", "hello") + ".\r\n")
				r.expect("RCPT TO:<"+rcpt+">", 250, 250, 354, 250)
				s.inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == tc.want && subjectLine(subject)(e) })
			}
		})
	}
}
