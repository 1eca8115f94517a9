package e2ee_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestHostileEncryptedEvents: tampered, replayed, moved and malformed encrypted events are each
// refused with an error, never decrypted, never a panic, and never mistaken for missing keys
// (which would keep them around for retries).
func TestHostileEncryptedEvents(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bob := newParty(t, srv, "alice"), newParty(t, srv, "bob")
	room := encryptedRoom(t, alice, bob)
	evtID := send(t, alice, room, matrix.Text("the original"))
	bob.got.wait(t, "the original")

	raw := heldEvent(t, bob, room, evtID)
	fresh := func() *event.Event {
		b, _ := json.Marshal(raw)
		var e event.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		e.RoomID = room
		return &e
	}
	if clear, err := bob.m.Decrypt(t.Context(), fresh()); err != nil || clear.Content.AsMessage().Body != "the original" {
		t.Fatalf("the untouched event: %v", err)
	}

	withCiphertext := func(f func(string) string) *event.Event {
		var m map[string]any
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &m)
		content := m["content"].(map[string]any)
		content["ciphertext"] = f(content["ciphertext"].(string))
		b, _ = json.Marshal(m)
		var e event.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		e.RoomID = room
		return &e
	}
	replayed := fresh()
	replayed.ID = "$replayed-copy"
	moved := fresh()
	moved.RoomID = "!another:localhost"

	for name, tc := range map[string]struct {
		evt  *event.Event
		want error
	}{
		"tampered ciphertext": {withCiphertext(func(c string) string {
			i := len(c) / 2
			b := []byte(c)
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}), nil},
		"truncated ciphertext":            {withCiphertext(func(c string) string { return c[:10] }), crypto.ErrCorruptedMegolmPayload},
		"not base64":                      {withCiphertext(func(c string) string { return "!!!" + c[3:] }), nil},
		"replayed under another event ID": {replayed, crypto.ErrDuplicateMessageIndex},
		// Sessions are per room: in another room the session is unknown, as if its key had not
		// come yet. It is never decrypted.
		"moved to another room": {moved, matrix.ErrKeysMissing},
	} {
		t.Run(name, func(t *testing.T) {
			clear, err := bob.m.Decrypt(t.Context(), tc.evt)
			if err == nil {
				t.Fatalf("decrypted to %q", clear.Content.AsMessage().Body)
			}
			if errors.Is(err, matrix.ErrKeysMissing) && tc.want != matrix.ErrKeysMissing {
				t.Fatalf("refusal looks like missing keys (would be retried): %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}

	// Content that is not encrypted content at all.
	junk := &event.Event{ID: "$junk", RoomID: room, Sender: alice.c.UserID(), Type: event.EventEncrypted}
	junk.Content.VeryRaw = json.RawMessage(`{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":42}`)
	_ = json.Unmarshal(junk.Content.VeryRaw, &junk.Content.Raw)
	if _, err := bob.m.Decrypt(t.Context(), junk); err == nil || errors.Is(err, matrix.ErrKeysMissing) {
		t.Fatalf("malformed content: %v", err)
	}
	// An unknown session is missing keys, which the Syncer retries.
	var m map[string]any
	b, _ := json.Marshal(raw)
	_ = json.Unmarshal(b, &m)
	m["content"].(map[string]any)["session_id"] = strings.Repeat("A", 43)
	b, _ = json.Marshal(m)
	var unknown event.Event
	_ = json.Unmarshal(b, &unknown)
	unknown.RoomID = room
	if _, err := bob.m.Decrypt(t.Context(), &unknown); !errors.Is(err, matrix.ErrKeysMissing) {
		t.Fatalf("unknown session: %v, want ErrKeysMissing", err)
	}
	// None of it reached bob's handlers.
	if n := bob.got.count("the original"); n != 1 {
		t.Errorf("bob's handlers saw the original %d times", n)
	}
}

// TestPlaintextInEncryptedRoomRefused: a member (or the homeserver) posting an unencrypted
// message into an encrypted room does not get past the trust policy: it is never handed out.
func TestPlaintextInEncryptedRoomRefused(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot := newParty(t, srv, "alice"), newParty(t, srv, "bot")
	room := encryptedRoom(t, alice, bot)
	mallory := srv.Client(t, "mallory") // no encryption
	if err := alice.c.Invite(t.Context(), room, mallory.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.SendText(t.Context(), room, "!admin grant mallory"); err != nil {
		t.Fatal(err)
	}
	send(t, alice, room, matrix.Text("a real message, after"))
	bot.got.wait(t, "a real message, after")
	if n := bot.got.count("!admin grant mallory"); n != 0 {
		t.Fatalf("a plaintext message in an encrypted room was handed out %d times", n)
	}
}
