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
	bot, officer, room := caseSystemStopped(t, srv, "Ärende 4711 registrerat")

	laptop := newDevice(t, officer)

	bot.start(e2ee.Options{PickleKey: testKey}) // the same database: the same device, its old device lists
	send(t, bot, room, matrix.Text("Beslut i ärende 4711"))
	got := laptop.got.wait(t, "Beslut i ärende 4711")
	if !got.Mautrix.WasEncrypted {
		t.Error("the message reached the laptop unencrypted")
	}
	officer.got.wait(t, "Beslut i ärende 4711")
}

// caseSystemStopped is a send-only case system, "casebot", that made a case room and sent
// first into it; the officer, who has joined, read it. Then the case system stopped.
func caseSystemStopped(t *testing.T, srv *matrixtest.Server, first string) (bot, officer *party, room id.RoomID) {
	t.Helper()
	bot = newSendOnlyParty(t, srv, "casebot")
	officer = newParty(t, srv, "officer")
	ctx := t.Context()
	room, err := bot.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer.c.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.c.Join(ctx, string(room)); err != nil {
		t.Fatal(err)
	}
	send(t, bot, room, matrix.Text(first))
	officer.got.wait(t, first)
	bot.close()
	return bot, officer, room
}
