package e2ee_test

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/jspeer"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRemovedJSSDKMemberCannotRead: a matrix-js-sdk member (Element's crypto) kicked from an
// encrypted case room cannot decrypt the bot's next message with the keys it holds, while it
// still decrypts the one before.
func TestRemovedJSSDKMemberCannotRead(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: TestRemovedMemberCannotRead covers the kick with samtal members, TestInteropJSSDK js-sdk's decryption (a Node peer, about 4 s)")
	}
	jspeer.Require(t)
	srv := matrixtest.NewServer(t)
	bot, officer := newParty(t, srv, "bot"), newParty(t, srv, "officer")
	jsUser, jsPassword := srv.RegisterUser(t, "element")
	ctx := t.Context()
	room, err := bot.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer.c.UserID(), jsUser}})
	if err != nil {
		t.Fatal(err)
	}
	peer := jspeer.Start(t, srv.URL, "element", jsPassword, room, "PEER_NO_ECHO=1")
	peer.Expect(t, "ready", 2*time.Minute)
	waitFor(t, "the officer to join", func() bool {
		members, err := bot.c.Mautrix().JoinedMembers(ctx, room)
		_, ok := members.Joined[officer.c.UserID()]
		return err == nil && ok
	})

	m1 := send(t, bot, room, matrix.Text("m1 for everyone"))
	if got := peer.Expect(t, "decrypted", time.Minute); got.EventID != m1 {
		t.Fatalf("js-sdk decrypted %s, want %s", got.EventID, m1)
	}
	must(t, bot.c.Kick(ctx, room, jsUser, "left the agency"))
	m2 := send(t, bot, room, matrix.Text("m2 after the kick"))
	officer.got.wait(t, "m2 after the kick")

	if res := peer.Decrypt(t, heldEvent(t, bot, room, m1)); !res.OK || res.Body != "m1 for everyone" {
		t.Fatalf("the check itself fails: js-sdk cannot decrypt m1 on request: %+v", res)
	}
	if res := peer.Decrypt(t, heldEvent(t, bot, room, m2)); res.OK {
		t.Errorf("the kicked js-sdk member decrypted m2: %q", res.Body)
	}
}

// TestNewJSSDKDeviceWhileSenderWasDown: the officer signs in with matrix-js-sdk on a new device
// while a send-only case system is not running; its next message, from a new process on the
// same database, reaches the new device.
func TestNewJSSDKDeviceWhileSenderWasDown(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: TestNewDeviceWhileSenderWasDown covers the new device with a samtal one, TestInteropJSSDK js-sdk's decryption (a Node peer, about 4 s)")
	}
	jspeer.Require(t)
	srv := matrixtest.NewServer(t)
	bot, officer, room := caseSystemStopped(t, srv, "registered")

	peer := jspeer.Start(t, srv.URL, "officer", officer.password, room, "PEER_NO_ECHO=1")
	peer.Expect(t, "ready", 2*time.Minute)

	bot.start(e2ee.Options{PickleKey: testKey})
	m2 := send(t, bot, room, matrix.Text("decided"))
	if got := peer.Expect(t, "decrypted", time.Minute); got.EventID != m2 || got.Body != "decided" {
		t.Errorf("the js-sdk device decrypted %s %q, want %s %q", got.EventID, got.Body, m2, "decided")
	}
}

// TestRestartNoUTDWithJSSDK: matrix-js-sdk sends 200 messages while a samtal bot is killed
// (SIGKILL, mostly) 20 times; the bot reads every one, with nothing left undecryptable.
func TestRestartNoUTDWithJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: restarts a bot process 20 times while js-sdk sends (about 40 s)")
	}
	const restarts, messages = 20, 200
	jspeer.Require(t)
	srv := matrixtest.NewServer(t)
	host := newParty(t, srv, "host")
	jsUser, jsPassword := srv.RegisterUser(t, "element")
	ctx := t.Context()
	bot := newBotProcess(t, srv, jsUser, host.c.UserID())
	room, err := host.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "js restarts", Invite: []id.UserID{srv.UserID("bot"), jsUser}})
	if err != nil {
		t.Fatal(err)
	}
	bot.start(0)
	waitJoined(t, host.c, room, srv.UserID("bot"))

	peer := jspeer.Start(t, srv.URL, "element", jsPassword, room, "PEER_NO_ECHO=1", fmt.Sprintf("PEER_SEND=%d", messages), "PEER_SEND_MS=60")
	peer.Expect(t, "ready", 2*time.Minute)
	killed := 0
	for run := 1; run <= restarts; run++ {
		time.Sleep(time.Duration(200+rand.IntN(1200)) * time.Millisecond)
		if run%5 == 0 {
			bot.stop(syscall.SIGTERM)
		} else {
			bot.stop(syscall.SIGKILL)
			killed++
		}
		bot.start(run)
	}
	peer.Expect(t, "sent_all", 3*time.Minute)
	bodies := make([]string, messages)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("js %d", i+1)
	}
	bot.waitSeen(t, "js-sdk", bodies)
	bot.stop(syscall.SIGTERM)
	bot.checkNoneUndecryptable()
	total := bot.stats()
	t.Logf("%d runs (%d killed) while js-sdk sent %d messages; %d undecryptable on arrival, %d decrypted late, %d refused",
		restarts+1, killed, messages, total.Undecryptable, total.LateDecrypted, total.Rejected)
	if total.Rejected != 0 {
		t.Errorf("the bot refused %d events for good", total.Rejected)
	}
}
