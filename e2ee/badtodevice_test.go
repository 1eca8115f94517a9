package e2ee_test

import (
	"encoding/json"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestForgedToDevice: to-device messages that claim another user's device key, or carry no
// ciphertext for the bot's device, are refused and counted before mautrix handles them.
func TestForgedToDevice(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot := newParty(t, srv, "alice"), newParty(t, srv, "bot")
	room := encryptedRoom(t, alice, bot)
	send(t, alice, room, matrix.Text("so that the bot knows alice's device"))
	bot.got.wait(t, "so that the bot knows alice's device")
	mallory := srv.Client(t, "mallory")
	ctx := t.Context()

	aliceKey := alice.m.OlmMachine().OwnIdentity().IdentityKey
	botKey := bot.m.OlmMachine().OwnIdentity().IdentityKey
	forged := map[string]any{ // claims to come from alice's device
		"algorithm": id.AlgorithmOlmV1, "sender_key": aliceKey,
		"ciphertext": map[string]any{string(botKey): map[string]any{"type": 0, "body": "AwogAAAA"}},
	}
	notForUs := map[string]any{
		"algorithm": id.AlgorithmOlmV1, "sender_key": "c29tZSBrZXkgb2YgbWFsbG9yeSdzIG93biAzMiBieXQ",
		"ciphertext": map[string]any{"c29tZW9uZSBlbHNlJ3Mga2V5IGF0IDQzIGNoYXJzIGxvbmc": map[string]any{"type": 0, "body": "AwogAAAA"}},
	}
	before := bot.m.Stats().ToDeviceRefused
	for _, raw := range []map[string]any{forged, notForUs} {
		_, err := mallory.SendToDevice(ctx, event.ToDeviceEncrypted, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			bot.c.UserID(): {bot.c.DeviceID(): {Raw: raw}},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the bot to refuse both", func() bool { return bot.m.Stats().ToDeviceRefused >= before+2 })
	// The bot still works.
	send(t, alice, room, matrix.Text("still here"))
	bot.got.wait(t, "still here")
}

// TestForwardedKeyFromStranger: mallory, in the room, forwards the bot a room key she made
// herself but that claims to be alice's, and sends a message with it. The bot refuses the
// message (ErrUntrustedSender): a key forwarded by a device that neither made it nor belongs to
// the bot's own account proves nothing.
func TestForwardedKeyFromStranger(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot := newParty(t, srv, "alice"), newParty(t, srv, "bot")
	mallory := newParty(t, srv, "mallory")
	ctx := t.Context()
	room := encryptedRoom(t, alice, bot)
	must(t, alice.c.Invite(ctx, room, mallory.c.UserID()))
	waitFor(t, "mallory to join", func() bool {
		members, err := alice.c.Mautrix().JoinedMembers(ctx, room)
		_, ok := members.Joined[mallory.c.UserID()]
		return err == nil && ok
	})

	ogs, err := olm.NewOutboundGroupSession()
	if err != nil {
		t.Fatal(err)
	}
	igs, err := olm.NewInboundGroupSession([]byte(ogs.Key()))
	if err != nil {
		t.Fatal(err)
	}
	exported, err := igs.Export(igs.FirstKnownIndex())
	if err != nil {
		t.Fatal(err)
	}
	aliceID := alice.m.OlmMachine().OwnIdentity()
	botDevice, err := mallory.m.OlmMachine().GetOrFetchDevice(ctx, bot.c.UserID(), bot.c.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	must(t, mallory.m.OlmMachine().SendEncryptedToDevice(ctx, botDevice, event.ToDeviceForwardedRoomKey, event.Content{Parsed: &event.ForwardedRoomKeyEventContent{
		RoomKeyEventContent: event.RoomKeyEventContent{Algorithm: id.AlgorithmMegolmV1, RoomID: room, SessionID: ogs.ID(), SessionKey: string(exported)},
		SenderKey:           aliceID.IdentityKey,
		SenderClaimedKey:    aliceID.SigningKey,
	}}))
	plain, _ := json.Marshal(map[string]any{"type": "m.room.message", "room_id": room, "content": map[string]any{"msgtype": "m.text", "body": "pay to mallory's account"}})
	ciphertext, err := ogs.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := mallory.c.Mautrix().SendMessageEvent(ctx, room, event.EventEncrypted, map[string]any{
		"algorithm": id.AlgorithmMegolmV1, "sender_key": aliceID.IdentityKey, "session_id": ogs.ID(),
		"ciphertext": string(ciphertext), "device_id": mallory.c.DeviceID(),
	})
	if err != nil {
		t.Fatal(err)
	}
	bot.syncedPast(2)()
	if n := bot.got.count("pay to mallory's account"); n != 0 {
		t.Fatal("the bot handed out a message whose key a stranger forwarded")
	}
	raw := heldEvent(t, bot, room, resp.EventID)
	if _, err := bot.m.Decrypt(ctx, raw); !errors.Is(err, e2ee.ErrUntrustedSender) {
		t.Errorf("decrypting mallory's message: %v, want ErrUntrustedSender", err)
	}
	if bot.m.Stats().ForwardedRefused == 0 {
		t.Error("the refusal was not counted")
	}
}
