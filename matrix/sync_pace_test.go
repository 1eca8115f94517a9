package matrix_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSyncMinInterval: with MinInterval, a Syncer in a busy room gets the messages sent during
// its pause in one batch, not one sync per message, and hands out every one of them, in order.
func TestSyncMinInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses 5 s between syncs")
	}
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	ctx := t.Context()
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	if _, err := bot.Mautrix().JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	var got syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 20 * time.Second, MinInterval: 5 * time.Second})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		got.add(e.Content.AsMessage().Body)
		return nil
	})
	startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	mustSend(t, alice, room, "m0")
	got.waitFor(t, "m0")
	before := s.Stats().Batches
	// Sent while the Syncer pauses after the batch with m0: they come in the next batch, or
	// two if the sends take longer than the pause.
	const n = 10
	for i := 1; i <= n; i++ {
		mustSend(t, alice, room, fmt.Sprintf("m%d", i))
	}
	all := got.waitFor(t, fmt.Sprintf("m%d", n))
	if len(all) != n+1 {
		t.Fatalf("handed out %v, want m0 to m%d once each", all, n)
	}
	for i, b := range all {
		if b != fmt.Sprintf("m%d", i) {
			t.Fatalf("handed out %v, want m0 to m%d in order", all, n)
		}
	}
	if batches := s.Stats().Batches - before; batches > 2 {
		t.Errorf("%d messages sent during the pause came in %d batches, want at most 2", n, batches)
	}
}

// TestSyncMarkRead: a Syncer with MarkRead moves its account's read marker to the newest event
// it handed out, so that the homeserver holds no unread notifications for it; one without
// leaves them, growing with every message.
func TestSyncMarkRead(t *testing.T) {
	srv := matrixtest.NewServer(t)
	reading := newClient(t, srv, "reading")
	idle := newClient(t, srv, "idle")
	alice := srv.Client(t, "alice")
	ctx := t.Context()
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{reading.UserID(), idle.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	for _, c := range []*matrix.Client{reading, idle} {
		if _, err := c.Mautrix().JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
	}
	var got, idleGot syncRecorder
	for _, x := range []struct {
		c    *matrix.Client
		mark bool
		rec  *syncRecorder
	}{{reading, true, &got}, {idle, false, &idleGot}} {
		s := x.c.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second, MarkRead: x.mark})
		s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
			x.rec.add(e.Content.AsMessage().Body)
			return nil
		})
		startSyncer(t, s)
		syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	}
	var last id.EventID
	for i := range 3 {
		sent, err := alice.SendText(ctx, room, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		last = sent.EventID
	}
	got.waitFor(t, "m2")
	idleGot.waitFor(t, "m2")

	unread := func(c *matrix.Client) int {
		r, err := c.Mautrix().SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := r.Rooms.Join[room]
		if jr == nil || jr.UnreadNotifications == nil {
			return 0
		}
		return jr.UnreadNotifications.NotificationCount
	}
	matrixtest.Eventually(t, func() error {
		var marker struct {
			EventID id.EventID `json:"event_id"`
		}
		if err := reading.Mautrix().GetRoomAccountData(ctx, room, "m.fully_read", &marker); err != nil {
			return err
		}
		if marker.EventID != last {
			return fmt.Errorf("read marker at %s, want the newest message %s", marker.EventID, last)
		}
		return nil
	})
	if n := unread(reading); n != 0 {
		t.Errorf("the reading bot has %d unread notifications, want 0", n)
	}
	if n := unread(idle); n < 3 {
		t.Errorf("the bot without MarkRead has %d unread notifications, want at least the 3 messages (the check shows nothing otherwise)", n)
	}
}
