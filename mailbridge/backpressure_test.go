package mailbridge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestPostedPerRoomBounded: while the homeserver takes no sends (the proxy holds them), a
// burst of 100 mails into one room is spooled, but only about 64 of them (at most one claimed
// batch more) are posted into the outbox; the rest wait in the spool. Once sends go through again, all 100 arrive, once each.
func TestPostedPerRoomBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("100 mails through a real homeserver")
	}
	s, proxy := newProxiedScene(t, mailbridge.Options{})
	g, inbox := s.g, s.inbox

	proxy.hold.Store(true)
	c := dial(t, s.addr)
	var subjects []string
	for i := range 100 {
		s := fmt.Sprintf("Burst %d", i)
		subjects = append(subjects, s)
		if err := send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", s, fmt.Sprintf("burst-%d@agency.example", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	states := func() (posted, pending int) {
		list, err := g.Undelivered(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			switch m.State() {
			case mailbridge.StatePosted:
				posted++
			case mailbridge.StatePending:
				pending++
			}
		}
		return posted, pending
	}
	matrixtest.Eventually(t, func() error {
		if posted, pending := states(); posted < 64 || posted+pending != 100 {
			return fmt.Errorf("%d posted, %d pending", posted, pending)
		}
		return nil
	})
	time.Sleep(time.Second) // room for a worker that posts on to show itself
	// A room with 64 posted takes no more; the batch claimed before it was full may take it to
	// 64 + 31.
	if posted, pending := states(); posted > 64+31 || pending < 100-64-31 {
		t.Fatalf("%d posted into the outbox and %d waiting in the spool, want at most 95 and at least 5", posted, pending)
	}

	proxy.unhold()
	for _, s := range subjects {
		inbox.Wait(t, subjectLine(s))
	}
	waitSpoolEmpty(t, g)
	for _, s := range subjects {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%s posted %d times, want once", s, n)
		}
	}
}
