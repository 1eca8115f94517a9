package matrix_test

import (
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestPendingItemAndThreadedFile: an outbox item found again by its ID reports its event ID
// (waiting or not), an unknown ID fails at once, a file sent with Attachment.Thread arrives in
// that thread, and the homeserver's upload limit is known.
func TestPendingItemAndThreadedFile(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)

	p, err := alice.Send(t.Context(), room, matrix.Text("thread root"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	again := alice.PendingItem(p.ID)
	if evt, err := again.Wait(t.Context()); err != nil || evt != root {
		t.Errorf("PendingItem(%d).Wait = %s, %v; want %s", p.ID, evt, err, root)
	}
	if evt, ok, err := again.Sent(t.Context()); !ok || err != nil || evt != root {
		t.Errorf("Sent = %s, %v, %v; want %s", evt, ok, err, root)
	}
	if _, ok, err := alice.PendingItem(p.ID + 1000).Sent(t.Context()); !ok || err == nil {
		t.Errorf("Sent of an unknown item = %v, %v; want an error", ok, err)
	}
	if _, err := alice.PendingItem(p.ID + 1000).Wait(t.Context()); err == nil {
		t.Error("Wait of an unknown item returned no error")
	}

	f, err := alice.SendFile(t.Context(), room, matrix.Attachment{Name: "a.txt", Data: []byte("in the thread"), Thread: root}, matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fileEvt, err := f.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := matrixtest.WaitEvent(t, bob, room, func(e *event.Event) bool { return e.ID == fileEvt })
	_ = got.Content.ParseRaw(got.Type)
	if rel := got.Content.AsMessage().RelatesTo; rel == nil || rel.Type != event.RelThread || rel.EventID != root {
		t.Errorf("file relation %+v, want thread %s", rel, root)
	}
	if limit := alice.UploadLimit(t.Context()); limit <= 0 {
		t.Errorf("UploadLimit = %d", limit)
	}
}
