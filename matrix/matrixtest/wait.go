package matrixtest

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// WaitTimeout is how long WaitEvent waits for a matching event before failing the test.
const WaitTimeout = 60 * time.Second

// syncFilter asks for enough history that an event sent just before the first sync is in it.
const syncFilter = `{"room":{"timeline":{"limit":100}}}`

// WaitEvent syncs as cli until an event in room satisfies match, and returns it with its
// content parsed. It fails the test after WaitTimeout. A nil match accepts any event.
//
// It starts from a fresh sync, so it also finds events sent before it was called, within the
// last 100 of the room.
func WaitEvent(tb testing.TB, cli *mautrix.Client, room id.RoomID, match func(*event.Event) bool) *event.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	since := ""
	for {
		resp, err := cli.SyncRequest(ctx, 5000, since, syncFilter, false, "")
		if err != nil {
			tb.Fatalf("matrixtest: waiting for an event in %s as %s: %v", room, cli.UserID, err)
		}
		since = resp.NextBatch
		if r, ok := resp.Rooms.Join[room]; ok {
			for _, evt := range append(r.State.Events, r.Timeline.Events...) {
				evt.RoomID = room
				_ = evt.Content.ParseRaw(evt.Type) // unknown types keep their raw content
				if match == nil || match(evt) {
					return evt
				}
			}
		}
	}
}

// WaitMessage waits until a message event in room has the given body, and returns it.
func WaitMessage(tb testing.TB, cli *mautrix.Client, room id.RoomID, body string) *event.Event {
	tb.Helper()
	return WaitEvent(tb, cli, room, func(evt *event.Event) bool {
		msg := evt.Content.AsMessage()
		return evt.Type == event.EventMessage && msg != nil && msg.Body == body
	})
}
