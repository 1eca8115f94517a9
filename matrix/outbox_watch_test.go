package matrix_test

import (
	"errors"
	"testing"
	"time"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRequeueRefusedItem: the homeserver refuses a send (a 400, as one still starting may
// answer; injected by the proxy), so the outbox fails the item for good and its watcher hears
// so; Requeue sends the same item again, once, and the watcher hears it was sent.
func TestRequeueRefusedItem(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	proxy := newFaultProxy(t, srv.URL)
	alice := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("alice", pw), DB: testDB(t)})
	outcomes := make(chan matrix.Outcome, 16)
	stop := alice.WatchOutcomes(func(o matrix.Outcome) { outcomes <- o })
	defer stop()
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)

	proxy.refuse.Store(1)
	p, err := alice.Send(t.Context(), room, matrix.Text("refused once"), matrix.SendOptions{IdempotencyKey: "refused-once"})
	if err != nil {
		t.Fatal(err)
	}
	var se *matrix.SendError
	var he *matrix.HTTPError
	if _, err := p.Wait(t.Context()); !errors.As(err, &se) || !errors.As(err, &he) || he.Status != 400 {
		t.Fatalf("Wait = %v, want a *SendError with the 400", err)
	}
	if o := nextOutcome(t, outcomes); o.ID != p.ID || o.Err == nil {
		t.Fatalf("watcher got %+v, want item %d failed", o, p.ID)
	}
	// The same key finds the failed item; Requeue sends it.
	again, err := alice.Send(t.Context(), room, matrix.Text("refused once"), matrix.SendOptions{IdempotencyKey: "refused-once"})
	if err != nil || again.ID != p.ID || !again.Duplicate {
		t.Fatalf("Send again = %+v, %v; want item %d as a duplicate", again, err, p.ID)
	}
	if err := alice.Requeue(t.Context(), p.ID); err != nil {
		t.Fatal(err)
	}
	evt, err := p.Wait(t.Context())
	if err != nil || evt == "" {
		t.Fatalf("Wait after Requeue = %q, %v", evt, err)
	}
	if o := nextOutcome(t, outcomes); o.ID != p.ID || o.EventID != evt || o.Err != nil {
		t.Fatalf("watcher got %+v, want item %d sent as %s", o, p.ID, evt)
	}
	assertPosted(t, bob, room, alice.UserID(), []string{"refused once"})
	if err := alice.Requeue(t.Context(), p.ID); !errors.Is(err, matrix.ErrNoItem) {
		t.Fatalf("Requeue of a sent item = %v, want ErrNoItem", err)
	}
	stop()
	if _, err := alice.Send(t.Context(), room, matrix.Text("unwatched"), matrix.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	assertPosted(t, bob, room, alice.UserID(), []string{"refused once", "unwatched"})
	select {
	case o := <-outcomes:
		t.Fatalf("watcher called after stop: %+v", o)
	default:
	}
}

// TestRequeueLostAnswer: a send reaches the room but its answer is lost (the proxy closes the
// connection), and with MaxAttempts 1 the item fails for good as unreachable. Requeue looks
// in the room first, finds the event there and records it, and sends nothing again.
func TestRequeueLostAnswer(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	proxy := newFaultProxy(t, srv.URL)
	alice := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("alice", pw), DB: testDB(t),
		Outbox: matrix.OutboxOptions{MaxAttempts: 1, ResumeDelay: 100 * time.Millisecond}})
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)

	proxy.drop.Store(1)
	p, err := alice.Send(t.Context(), room, matrix.Text("answer lost"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(t.Context()); !errors.Is(err, matrix.ErrUnreachable) {
		t.Fatalf("Wait = %v, want ErrUnreachable", err)
	}
	assertPosted(t, bob, room, alice.UserID(), []string{"answer lost"}) // it did arrive
	sends := proxy.sends.Load()
	if err := alice.Requeue(t.Context(), p.ID); err != nil {
		t.Fatal(err)
	}
	if evt, err := p.Wait(t.Context()); err != nil || evt == "" {
		t.Fatalf("Wait after Requeue = %q, %v", evt, err)
	}
	if n := proxy.sends.Load() - sends; n != 0 {
		t.Errorf("Requeue sent the item %d more times, want 0 (it was in the room)", n)
	}
	assertPosted(t, bob, room, alice.UserID(), []string{"answer lost"})
}

func nextOutcome(t *testing.T, ch <-chan matrix.Outcome) matrix.Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-t.Context().Done():
		t.Fatal("no outcome")
	}
	return matrix.Outcome{}
}
