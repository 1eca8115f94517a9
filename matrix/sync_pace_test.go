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
