package matrixtest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// Recorder collects the events a samtal client receives in a room, decrypted where the client
// has encryption, through a Syncer of its own: messages (m.room.message, stickers), reactions
// and membership changes, the account's own included.
//
// Its Syncer replays history on the first sync of the client's session, so a recorder made
// after the client joined the room also has the room's recent events from before it started.
// Run one Recorder (one Syncer) per client at a time.
type Recorder struct {
	room id.RoomID

	mu      sync.Mutex
	events  []*matrix.Event
	changed chan struct{} // closed and replaced when an event is added or the Syncer stops
	err     error         // why the Syncer stopped, when it stopped on its own
	stopped bool
}

// NewRecorder starts recording what c receives in room ("" records every room) and stops when
// the test ends.
func NewRecorder(tb testing.TB, c *matrix.Client, room id.RoomID) *Recorder {
	tb.Helper()
	r := &Recorder{room: room, changed: make(chan struct{})}
	s := c.NewSyncer(matrix.SyncOptions{Timeout: time.Second, ReplayHistory: true, IncludeOwn: true})
	s.OnMessage(r.add)
	s.OnReaction(r.add)
	s.OnMembership(r.add)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := s.Run(ctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.err, r.stopped = err, true
		close(r.changed)
		r.changed = make(chan struct{})
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *Recorder) add(_ context.Context, evt *matrix.Event) error {
	if r.room != "" && evt.RoomID != r.room {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.ContainsFunc(r.events, func(e *matrix.Event) bool { return e.ID == evt.ID }) {
		return nil // delivered again after a repeated batch
	}
	r.events = append(r.events, evt)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// Events returns the events recorded so far, in the order they arrived.
func (r *Recorder) Events() []*matrix.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Wait returns the first recorded event that satisfies match, as soon as there is one, and
// fails the test after WaitTimeout or when the Syncer stops with an error.
func (r *Recorder) Wait(tb testing.TB, match func(*matrix.Event) bool) *matrix.Event {
	tb.Helper()
	timeout := time.NewTimer(WaitTimeout)
	defer timeout.Stop()
	seen := 0
	for {
		r.mu.Lock()
		for _, e := range r.events[seen:] {
			if match(e) {
				r.mu.Unlock()
				return e
			}
		}
		seen = len(r.events)
		stopped, err, changed := r.stopped, r.err, r.changed
		r.mu.Unlock()
		if stopped {
			tb.Fatalf("matrixtest: recorder stopped before a matching event arrived: %v", err)
		}
		select {
		case <-changed:
		case <-timeout.C:
			tb.Fatalf("matrixtest: no matching event in %s within %s (%d recorded)", r.roomName(), WaitTimeout, seen)
		}
	}
}

// WaitText waits for a message whose text (Event.Text) is body.
func (r *Recorder) WaitText(tb testing.TB, body string) *matrix.Event {
	tb.Helper()
	return r.Wait(tb, func(e *matrix.Event) bool { return e.Text() == body })
}

func (r *Recorder) roomName() string {
	if r.room == "" {
		return "any room"
	}
	return string(r.room)
}
