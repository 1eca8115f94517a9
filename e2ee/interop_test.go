package e2ee_test

import (
	"bytes"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/jspeer"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestInteropJSSDK: a samtal bot and matrix-js-sdk with its Rust crypto (what Element uses)
// talk in an encrypted room. Neither device is verified; each reads the other, and the server
// holds only ciphertext.
func TestInteropJSSDK(t *testing.T) {
	jspeer.Require(t)
	srv := matrixtest.NewServer(t)
	bot := newParty(t, srv, "bot")
	jsUser, jsPassword := srv.RegisterUser(t, "element")
	ctx := t.Context()
	room, err := bot.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "interop", Invite: []id.UserID{jsUser}})
	if err != nil {
		t.Fatal(err)
	}

	peer := jspeer.Start(t, srv.URL, "element", jsPassword, room)
	// The bot shares its room key with the devices it knows when it first sends: the js device
	// must be on the server by then.
	ready := peer.Expect(t, "ready", 2*time.Minute)
	if ready.UserID != jsUser {
		t.Fatalf("js peer is %s, want %s", ready.UserID, jsUser)
	}

	const question = "Ärende 4711: vilket beslut gäller?"
	asked := send(t, bot, room, matrix.Text(question))
	got := peer.Expect(t, "decrypted", time.Minute)
	if got.EventID != asked || got.Body != question || got.Sender != bot.c.UserID() || !got.Encrypted {
		t.Errorf("js-sdk decrypted %+v, want %s's encrypted %s %q", got, bot.c.UserID(), asked, question)
	}

	answered := peer.Expect(t, "sent", time.Minute)
	answer := bot.got.wait(t, "echo: "+question)
	if answer.ID != answered.EventID || answer.Sender != jsUser || !answer.Mautrix.WasEncrypted {
		t.Errorf("the bot got %s from %s (encrypted %v), want %s from %s, encrypted",
			answer.ID, answer.Sender, answer.Mautrix.WasEncrypted, answered.EventID, jsUser)
	}

	// What the server holds: ciphertext, in both directions.
	for _, evt := range []id.EventID{asked, answered.EventID} {
		held := heldEvent(t, bot, room, evt)
		if held.Type != event.EventEncrypted {
			t.Errorf("the server holds %s as %s, want m.room.encrypted", evt, held.Type.Type)
		}
		if bytes.Contains(held.Content.VeryRaw, []byte("4711")) {
			t.Errorf("plaintext on the server: %s", held.Content.VeryRaw)
		}
	}
}
