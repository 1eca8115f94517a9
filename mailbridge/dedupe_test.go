package mailbridge_test

import (
	"fmt"
	"testing"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSameMessageIDOtherContent: the same mail delivered twice with different headers on the
// way (here the gateway's own Authentication-Results, pass then fail) is posted once, and the
// second delivery is done, not retried until it is dead-lettered.
func TestSameMessageIDOtherContent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	g, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router})
	inbox := matrixtest.NewRecorder(t, officer, room)
	body := mail("a@agency.example", "Relayed twice", "relayed@agency.example", "the same mail")
	for _, result := range []string{"pass", "fail"} {
		raw := "Authentication-Results: mx.test; dmarc=" + result + " header.from=agency.example\r\n" + body
		if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Marker", "marker@agency.example", "after")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Marker"))
	if n := count(inbox, subjectLine("Relayed twice")); n != 1 {
		t.Errorf("posted %d times, want once", n)
	}
	matrixtest.Eventually(t, func() error {
		if list, err := g.Undelivered(t.Context()); err != nil || len(list) != 0 {
			return fmt.Errorf("undelivered: %+v, %v", list, err)
		}
		return nil
	})
}
