package e2ee_test

import (
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestKeysGoneFromServerAndReset: the homeserver forgets the bot's device keys (the device was
// deleted and the same device ID logged in again); Enable says so instead of running on with a
// device nobody can encrypt to, and Reset gets the bot going again as a new device.
func TestKeysGoneFromServerAndReset(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	bot := newParty(t, srv, "bot")
	oldDevice := bot.c.DeviceID()
	history := encryptedRoom(t, alice, bot)
	send(t, alice, history, matrix.Text("before the loss"))
	bot.got.wait(t, "before the loss")
	bot.close()

	// Delete the device on the server, then log in again under the same device ID: a device
	// without keys, while the bot's store says its keys were uploaded.
	raw, _ := mautrix.NewClient(srv.URL, "", "")
	_, err := raw.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bot"}, Password: bot.password, StoreCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.LogoutAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bot"}, Password: bot.password, DeviceID: oldDevice})
	if err != nil || resp.DeviceID != oldDevice {
		t.Fatalf("re-login on %s: %v (%s)", oldDevice, err, resp.DeviceID)
	}
	db, err := matrix.OpenDatabase(t.Context(), bot.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := matrix.New(t.Context(), matrix.Options{DB: db, Login: matrix.AccessToken(resp.AccessToken), Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e2ee.Enable(t.Context(), c, e2ee.Options{PickleKey: testKey})
	if !errors.Is(err, e2ee.ErrKeysGoneFromServer) {
		t.Fatalf("Enable with keys gone from the server: %v, want ErrKeysGoneFromServer", err)
	}
	if err := e2ee.Reset(t.Context(), c); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	db.Close()

	// A new device, with new keys, that alice can talk to.
	bot.start(e2ee.Options{PickleKey: testKey})
	if bot.c.DeviceID() == oldDevice {
		t.Fatal("Reset kept the old device")
	}
	room := encryptedRoom(t, alice, bot)
	send(t, alice, room, matrix.Text("are you back?"))
	bot.got.wait(t, "are you back?")
	send(t, bot, room, matrix.Text("yes, as a new device"))
	alice.got.wait(t, "yes, as a new device")

	// What the old device read, the new one still reads: no history lost to the reset.
	var old *event.Event
	msgs, err := bot.c.Mautrix().Messages(t.Context(), history, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range msgs.Chunk {
		if evt.Type == event.EventEncrypted {
			old = evt
		}
	}
	if old == nil {
		t.Fatal("no encrypted history to read")
	}
	old.RoomID = history
	clear, err := bot.m.Decrypt(t.Context(), old)
	if err != nil || clear.Content.AsMessage().Body != "before the loss" {
		t.Fatalf("history after reset: %v", err)
	}
}

// TestRepairUnrecordedFirstUpload: the process died during its first key upload, after the
// upload and before recording it. The keys on the server are the store's own, so Enable records
// the upload and goes on, instead of refusing the device.
func TestRepairUnrecordedFirstUpload(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	bot := newParty(t, srv, "bot")
	device := bot.c.DeviceID()
	if _, err := bot.db.Exec(t.Context(), `UPDATE crypto_account SET shared = false`); err != nil {
		t.Fatal(err)
	}
	bot.close()
	bot.start(e2ee.Options{PickleKey: testKey})
	if bot.c.DeviceID() != device {
		t.Fatalf("repair changed the device: %s, want %s", bot.c.DeviceID(), device)
	}
	room := encryptedRoom(t, alice, bot)
	send(t, alice, room, matrix.Text("still the same device?"))
	bot.got.wait(t, "still the same device?")
}
