package matrix_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSyncRewindsAfterRestart: the last /sync answer a Syncer committed left a message out and
// moved next_batch past it (as Dendrite does when SIGTERM cuts the answer short), and the Syncer
// stopped before its next sync, as when the bot and the homeserver restart together. The fault
// is injected by the proxy of TestSyncRewindsAfterAnswerCutShort: one answer has the message
// taken out, and the next is held until the Syncer has stopped. A new Syncer on the same
// database delivers the message, and nothing twice: neither the message the cut-short answer
// did deliver nor one from the batch before. Before, the message was never delivered.
//
// The first Syncer is stopped only once the batch with "one" is committed: stopped between its
// handler and its commit, it rightly hands "one" out again (at least once), which this test
// once took for a repeat. That failure then hung the test (CI's -race step, 8 minutes): the
// proxy held an answer until close(release), which a failed test never reached, and the
// cleanup's httptest.Server.Close waited for that request for good. The hold now also ends when
// the Syncer's request does.
func TestSyncRewindsAfterRestart(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "bot")
	alice := srv.Client(t, "alice")
	proxy := newSyncProxy(t, srv)
	bot := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("bot", password), DB: testDB(t)})
	room := syncRoom(t, alice, bot)

	var got syncRecorder
	var committedAt atomic.Uint64 // the batch count once the batch with "one" is committed
	newSyncer := func() *matrix.Syncer {
		s := bot.NewSyncer(matrix.SyncOptions{Timeout: time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
			if e.RoomID == room {
				if e.Text() == "one" {
					committedAt.CompareAndSwap(0, s.Stats().Batches+1)
				}
				got.add(e.Text())
			}
			return nil
		})
		return s
	}
	s := newSyncer()
	stop := startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	mustSend(t, alice, room, "one")
	got.waitFor(t, "one")
	syncWait(t, "the batch with one to be committed", func() bool {
		n := committedAt.Load()
		return n > 0 && s.Stats().Batches >= n
	})
	stop()
	// Sent while no Syncer runs, so that the next answer has both.
	mustSend(t, alice, room, "before")
	mustSend(t, alice, room, "two")

	body := func(e *event.Event) string {
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsMessage().Body
	}
	held, release := make(chan struct{}), make(chan struct{})
	var state atomic.Int32 // 0: cut "two" out of the answer with it; 1: hold the next answer; 2: pass
	proxy.setRewrite(func(ctx context.Context, since string, resp *mautrix.RespSync) bool {
		switch state.Load() {
		case 0:
			if r := resp.Rooms.Join[room]; r != nil && slices.ContainsFunc(r.Timeline.Events, func(e *event.Event) bool { return body(e) == "two" }) &&
				state.CompareAndSwap(0, 1) {
				r.Timeline.Events = slices.DeleteFunc(r.Timeline.Events, func(e *event.Event) bool { return body(e) == "two" })
			}
		case 1:
			// The answer before this one was committed: the Syncer asks for the next only then.
			if !state.CompareAndSwap(1, 2) {
				return false
			}
			close(held)
			select {
			case <-release:
			case <-ctx.Done(): // the Syncer stopped, or the test ended without releasing
			}
			return true
		}
		return false
	})
	s = newSyncer()
	stop = startSyncer(t, s)
	select {
	case <-held:
	case <-time.After(matrixtest.WaitTimeout):
		t.Fatal("the proxy never saw the answer with the message")
	}
	if g, want := got.snapshot(), []string{"one", "before"}; !slices.Equal(g, want) {
		t.Fatalf("before the restart, delivered %q, want %q", g, want)
	}
	stop() // the Syncer stops before its next sync is answered
	close(release)

	s = newSyncer()
	startSyncer(t, s)
	got.waitFor(t, "two")
	mustSend(t, alice, room, "three")
	if g, want := got.waitFor(t, "three"), []string{"one", "before", "two", "three"}; !slices.Equal(g, want) {
		t.Errorf("delivered %q, want %q", g, want)
	}
}
