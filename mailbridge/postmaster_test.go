package mailbridge_test

import (
	"testing"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestBarePostmaster: RCPT TO:<Postmaster> without a domain, which RFC 5321 4.5.1 requires a
// server to accept (go-smtp up to v0.25 refused it with 501), is taken in any case and goes
// where postmaster@ of the first route's domain goes, past that route's allow-list; with
// Options.PostmasterRoom, there. MAIL FROM:<Postmaster> is still no valid reverse-path (501).
func TestBarePostmaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	desk := roomWith(t, bot, officer, false)
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "registry@agency.example", Room: string(room), AllowSenders: []string{"system@agency.example"}},
		mailbridge.Route{Address: "desk@second.example", Room: string(desk)},
	)
	if err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, officer, "")
	for _, tc := range []struct {
		name string
		opts mailbridge.Options
		want string // room
	}{
		{"first route's domain", mailbridge.Options{Client: bot, Router: router, DB: openDB(t, "spool1.db")}, string(room)},
		{"PostmasterRoom", mailbridge.Options{Client: bot, Router: router, DB: openDB(t, "spool2.db"), PostmasterRoom: string(desk)}, string(desk)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startGateway(t, tc.opts)
			r := dialRaw(t, addr)
			r.write("EHLO client.test\r\n")
			r.expect("EHLO", 250)
			r.write("MAIL FROM:<Postmaster>\r\n")
			r.expect("MAIL FROM:<Postmaster>", 501)
			for _, rcpt := range []string{"Postmaster", "postmaster"} {
				subject := "Bare " + rcpt + " " + tc.name
				r.write("MAIL FROM:<stranger@outside.example>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n" +
					mail("Stranger <stranger@outside.example>", subject, "", "hello") + ".\r\n")
				r.expect("RCPT TO:<"+rcpt+">", 250, 250, 354, 250)
				inbox.Wait(t, func(e *matrix.Event) bool { return string(e.RoomID) == tc.want && subjectLine(subject)(e) })
			}
		})
	}
}
