package e2ee_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestNewDeviceWhileSenderWasDown: a case system that only sends, and runs as a new process
// each time, shares the room key with a device the officer signed in on while it was not
// running. Its stored device lists are from before; the first send into the room in a new
// process asks the server again.
func TestNewDeviceWhileSenderWasDown(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newSendOnlyParty(t, srv, "casebot")
	officer := newParty(t, srv, "officer")
	ctx := t.Context()
	room, err := bot.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer.c.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.c.Join(ctx, string(room)); err != nil {
		t.Fatal(err)
	}
	send(t, bot, room, matrix.Text("Ärende 4711 registrerat"))
	officer.got.wait(t, "Ärende 4711 registrerat")
	bot.close()

	laptop := newDevice(t, officer)

	bot.start(e2ee.Options{PickleKey: testKey}) // the same database: the same device, its old device lists
	send(t, bot, room, matrix.Text("Beslut i ärende 4711"))
	got := laptop.got.wait(t, "Beslut i ärende 4711")
	if !got.Mautrix.WasEncrypted {
		t.Error("the message reached the laptop unencrypted")
	}
	officer.got.wait(t, "Beslut i ärende 4711")
}
