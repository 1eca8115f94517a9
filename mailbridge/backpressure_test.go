package mailbridge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestPostedPerRoomBounded: while the homeserver takes no sends (the proxy holds them), a
// burst of 100 mails into one room is spooled, but at most 63 of them (32, and one claimed
// batch more) are posted into the outbox; the rest wait in the spool. More mail for the full
// room does not make the delivery worker read the spool again for each mail (before, it did:
// a pass over the whole backlog per mail spooled, a core's worth of CPU under a burst). Once
// sends go through again, all arrive, once each.
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
		if posted, pending := states(); posted < 32 || posted+pending != 100 {
			return fmt.Errorf("%d posted, %d pending", posted, pending)
		}
		return nil
	})
	time.Sleep(time.Second) // room for a worker that posts on to show itself
	// A room with 32 posted takes no more; the batch claimed before it was full (up to 32
	// mails) may take it to 63.
	if posted, pending := states(); posted > 63 || pending < 100-63 {
		t.Errorf("%d posted into the outbox and %d waiting in the spool, want at most 63 and at least 37", posted, pending)
	}

	// 50 more for the full room: the worker is woken by none of them, only by its timer
	// (about once a second while a room is full).
	before, start := mailbridge.WorkerPasses(g), time.Now()
	for i := range 50 {
		s := fmt.Sprintf("Burst %d", 100+i)
		subjects = append(subjects, s)
		if err := send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", s, fmt.Sprintf("burst-%d@agency.example", 100+i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	passes, took := mailbridge.WorkerPasses(g)-before, time.Since(start)
	if limit := 3 + 2*int64(took/time.Second); passes > limit {
		t.Errorf("the delivery worker read the spool %d times while 50 mails for a full room were spooled in %v, want at most %d", passes, took.Round(time.Millisecond), limit)
	}

	// The drain: a full room is refilled a batch at a time, below half its bound, not a mail
	// each time one is sent (a pass per sent mail was a read of the whole backlog per mail).
	before, start = mailbridge.WorkerPasses(g), time.Now()
	proxy.unhold()
	for _, s := range subjects {
		inbox.Wait(t, subjectLine(s))
	}
	waitSpoolEmpty(t, g)
	passes, took = mailbridge.WorkerPasses(g)-before, time.Since(start)
	// About two passes per batch of 32 refilled, and the timer's while the room is full.
	if limit := 5 + int64(len(subjects)/16) + 2*int64(took/time.Second); passes > limit {
		t.Errorf("the delivery worker read the spool %d times while %d mails drained in %v, want at most %d", passes, len(subjects), took.Round(time.Millisecond), limit)
	}
	for _, s := range subjects {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%s posted %d times, want once", s, n)
		}
	}
}
