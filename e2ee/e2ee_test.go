package e2ee_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// encryptedRoom has a create an encrypted room and b join it.
func encryptedRoom(t testing.TB, a, b *party) id.RoomID {
	t.Helper()
	room, err := a.c.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "encrypted", Invite: []id.UserID{b.c.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Join(t.Context(), string(room)); err != nil {
		t.Fatal(err)
	}
	return room
}

func send(t testing.TB, from *party, room id.RoomID, m matrix.Message) id.EventID {
	t.Helper()
	p, err := from.c.Send(t.Context(), room, m, matrix.SendOptions{})
	if err != nil {
		t.Fatalf("%s send: %v", from.user, err)
	}
	evt, err := p.Wait(t.Context())
	if err != nil {
		t.Fatalf("%s send: %v", from.user, err)
	}
	return evt
}

// TestEncryptedConversation: two samtal clients talk in an encrypted room, with a file; the
// server only ever holds m.room.encrypted.
func TestEncryptedConversation(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bob := newParty(t, srv, "alice"), newParty(t, srv, "bob")
	room := encryptedRoom(t, alice, bob)
	ctx := t.Context()

	first := send(t, alice, room, matrix.Text("Beslut i ärende 4711: bifall"))
	got := bob.got.wait(t, "Beslut i ärende 4711: bifall")
	if got.ID != first || !got.Mautrix.WasEncrypted {
		t.Errorf("bob got %s (encrypted %v), want %s encrypted", got.ID, got.Mautrix.WasEncrypted, first)
	}
	send(t, bob, room, matrix.Notice("Tack, noterat"))
	alice.got.wait(t, "Tack, noterat")

	pdf := []byte("%PDF-1.7 beslut 4711")
	p, err := alice.c.SendFile(ctx, room, matrix.Attachment{Name: "beslut.pdf", Data: pdf}, matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	file := bob.got.wait(t, "beslut.pdf")
	content := file.Content.AsMessage()
	if content.File == nil || content.URL != "" {
		t.Fatalf("file in an encrypted room is not an encrypted file: %+v", content)
	}
	data, err := bob.c.Download(ctx, content, 0)
	if err != nil || !bytes.Equal(data, pdf) {
		t.Fatalf("bob's download: %q, %v", data, err)
	}

	// What the server holds: only ciphertext from alice and bob.
	spy := srv.Client(t, "spy")
	if err := alice.c.Invite(ctx, room, spy.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := spy.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	// The spy's join reaches the server's history check a moment after the join returns.
	matrixtest.WaitEvent(t, spy, room, func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == spy.UserID.String()
	})
	msgs, err := spy.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Senders: []id.UserID{alice.c.UserID(), bob.c.UserID()}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, evt := range msgs.Chunk {
		if evt.StateKey != nil {
			continue
		}
		seen++
		if evt.Type != event.EventEncrypted {
			t.Errorf("the server holds a %s event %s in an encrypted room", evt.Type.Type, evt.ID)
		}
		if bytes.Contains(evt.Content.VeryRaw, []byte("4711")) {
			t.Errorf("plaintext on the server: %s", evt.Content.VeryRaw)
		}
	}
	if seen < 3 {
		t.Errorf("the server holds %d message events, want 3", seen)
	}
}

// TestPickleKeyAndStoreProblems: the errors Enable gives when the store cannot be used.
func TestPickleKeyAndStoreProblems(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newParty(t, srv, "bot")
	bot.close()

	// The wrong pickle key does not open the store.
	err := bot.startErr(e2ee.Options{PickleKey: []byte("another key, 32 bytes long......")})
	if !errors.Is(err, e2ee.ErrWrongPickleKey) {
		t.Fatalf("wrong pickle key: %v, want ErrWrongPickleKey", err)
	}
	// Too short a key is refused before anything is read.
	if err := bot.startErr(e2ee.Options{PickleKey: []byte("short")}); err == nil {
		t.Fatal("a 5-byte pickle key was accepted")
	}
	// The right key still works.
	if err := bot.startErr(e2ee.Options{PickleKey: testKey}); err != nil {
		t.Fatalf("right key after wrong ones: %v", err)
	}
	bot.close()
}

func TestLoadOrCreatePickleKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conf", "pickle.key")
	k1, err := e2ee.LoadOrCreatePickleKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode().Perm())
	}
	k2, err := e2ee.LoadOrCreatePickleKey(path)
	if err != nil || !bytes.Equal(k1, k2) || len(k1) != 32 {
		t.Fatalf("second load: %x vs %x, %v", k2, k1, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e2ee.LoadOrCreatePickleKey(path); err == nil {
		t.Error("a world-readable key file was accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("not base64!!"), 0o600)
	if _, err := e2ee.LoadOrCreatePickleKey(bad); err == nil {
		t.Error("a garbled key file was accepted")
	}
}
