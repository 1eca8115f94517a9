package matrix_test

import (
	"errors"
	"sync"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestNoPlaintextAfterJoin: a client that asked about a room before joining it (and got "not a
// member") must not remember "not encrypted": after joining an encrypted room, Send refuses.
func TestNoPlaintextAfterJoin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	alice := newClient(t, srv, "alice")
	bot := newClient(t, srv, "bot") // no encryption
	yes := true
	room, err := alice.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PublicRoom, Encrypted: &yes})
	if err != nil {
		t.Fatal(err)
	}
	// It cannot read the room: an error (the server's refusal), never "not encrypted".
	if enc, err := bot.RoomEncrypted(ctx, room); err == nil && !enc {
		t.Fatal("before joining: a room the bot cannot read was reported as not encrypted")
	}
	if _, err := bot.Join(ctx, room.String()); err != nil {
		t.Fatal(err)
	}
	p, err := bot.Send(ctx, room, matrix.Text("TOP SECRET"), matrix.SendOptions{})
	if errors.Is(err, matrix.ErrEncryptionRequired) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	evtID, err := p.Wait(ctx)
	if errors.Is(err, matrix.ErrEncryptionRequired) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if evt, err := alice.Mautrix().GetEvent(ctx, room, evtID); err == nil && evt.Type == event.EventMessage {
		t.Fatalf("plaintext sent into an encrypted room: %s", evt.Content.VeryRaw)
	}
}

// TestOutcomeOnce: each item's outcome is reported once; a lane started while the marks of
// the previous one were not yet written does not send those items again.
func TestOutcomeOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: 150 sends one after another (about 10 s)")
	}
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	_, pw := srv.RegisterUser(t, "alice")
	var mu sync.Mutex
	seen := map[int64]int{}
	alice := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: testDB(t),
		Outbox: matrix.OutboxOptions{OnOutcome: func(o matrix.Outcome) { mu.Lock(); seen[o.ID]++; mu.Unlock() }}})
	no := false
	room, err := alice.CreateRoom(ctx, matrix.RoomSpec{Encrypted: &no})
	if err != nil {
		t.Fatal(err)
	}
	for range 150 {
		p, err := alice.Send(ctx, room, matrix.Text("n"), matrix.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	alice.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 150 {
		t.Errorf("%d outcomes, want 150", len(seen))
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("item %d: outcome reported %d times (delivered again)", id, n)
		}
	}
}

// TestKeysWithControlCharactersRefused: the outbox's own keys (an oversized message's
// attachment) contain a control character; a caller's key cannot collide with them.
func TestKeysWithControlCharactersRefused(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	for _, key := range []string{"case\x1f1", "a\nb", string(make([]byte, 251))} {
		if _, err := alice.Send(t.Context(), "!room:localhost", matrix.Text("x"), matrix.SendOptions{IdempotencyKey: key}); !errors.Is(err, matrix.ErrInvalidContent) {
			t.Errorf("key %q: %v, want ErrInvalidContent", key, err)
		}
	}
}
