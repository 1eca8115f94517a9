package e2ee_test

import (
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// newPartyWith is newParty with encryption options of its own.
func newPartyWith(t testing.TB, srv *matrixtest.Server, localpart string, opts e2ee.Options) *party {
	t.Helper()
	_, pw := srv.RegisterUser(t, localpart)
	p := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), localpart+".db"), user: localpart, password: pw, got: &inbox{}}
	opts.PickleKey = testKey
	p.start(opts)
	t.Cleanup(p.close)
	return p
}

// TestWithheldKeyRecoveredByRequest: alice shares keys with verified devices only, so the bot's
// device is refused the key of her first message. Once she verifies the bot's device, the bot's
// key request (sent by itself, since the message stays undecryptable) is answered, and the
// message is handed out, counted as recovered by key request. A user who was never in the room
// asks for the same key and is refused.
func TestWithheldKeyRecoveredByRequest(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newPartyWith(t, srv, "alice", e2ee.Options{ShareWith: e2ee.Verified})
	bot := newParty(t, srv, "bot")
	ctx := t.Context()
	room := encryptedRoom(t, alice, bot)
	m1 := send(t, alice, room, matrix.Text("only for verified devices"))
	session := sessionOf(t, alice, room, m1)
	bot.syncedPast(2)()
	if n := bot.got.count("only for verified devices"); n != 0 {
		t.Fatalf("the bot read a message whose key was withheld from it")
	}

	// A stranger asks alice for the key.
	mallory := newParty(t, srv, "mallory")
	refused := alice.m.Stats().KeyRequestsRefused
	must(t, mallory.m.OlmMachine().SendRoomKeyRequest(ctx, room, alice.m.OlmMachine().OwnIdentity().IdentityKey, session, "",
		map[id.UserID][]id.DeviceID{alice.c.UserID(): {"*"}}))
	waitFor(t, "alice to refuse mallory's key request", func() bool { return alice.m.Stats().KeyRequestsRefused > refused })
	mallory.syncedPast(2)()
	if igs, _ := mallory.m.OlmMachine().CryptoStore.GetGroupSession(ctx, room, session); igs != nil {
		t.Error("a user who was never in the room got a room key by asking for it")
	}

	// Alice verifies the bot's device.
	dev, err := alice.m.OlmMachine().GetOrFetchDevice(ctx, bot.c.UserID(), bot.c.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	dev.Trust = id.TrustStateVerified
	must(t, alice.m.OlmMachine().CryptoStore.PutDevice(ctx, bot.c.UserID(), dev))

	got := bot.got.wait(t, "only for verified devices")
	if got.ID != m1 {
		t.Errorf("the bot got %s, want %s", got.ID, m1)
	}
	st := bot.m.Stats()
	if st.MissingKeys["withheld"] != 1 || st.Recovered["key_request"] != 1 || st.KeysRequested == 0 {
		t.Errorf("the bot's counters: missing %v, recovered %v, %d requested; want 1 withheld, 1 recovered by key request, some requested",
			st.MissingKeys, st.Recovered, st.KeysRequested)
	}
	if alice.m.Stats().KeyRequestsAnswered == 0 {
		t.Error("alice counted no answered key request")
	}
}

// TestRoomKeyStatus: the status of a room's key names the devices that have it and, with the
// reason, those that do not.
func TestRoomKeyStatus(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newPartyWith(t, srv, "alice", e2ee.Options{ShareWith: e2ee.Verified})
	bob := newParty(t, srv, "bob")
	room := encryptedRoom(t, alice, bob)
	m1 := send(t, alice, room, matrix.Text("status"))
	st, err := alice.m.RoomKeyStatus(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	if st.SessionID != sessionOf(t, alice, room, m1) || st.Messages != 1 || st.Started.IsZero() {
		t.Errorf("status names key %s (%d messages, started %v), want m1's, 1 message", st.SessionID, st.Messages, st.Started)
	}
	if len(st.SharedWith) != 0 || len(st.WithheldFrom) != 1 || st.WithheldFrom[0].Device != bob.c.DeviceID() ||
		!strings.Contains(st.WithheldFrom[0].Reason, "ShareWith") {
		t.Errorf("shared with %+v, withheld from %+v; want bob's unverified device withheld for the policy", st.SharedWith, st.WithheldFrom)
	}

	dev, err := alice.m.OlmMachine().GetOrFetchDevice(t.Context(), bob.c.UserID(), bob.c.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	dev.Trust = id.TrustStateVerified
	must(t, alice.m.OlmMachine().CryptoStore.PutDevice(t.Context(), bob.c.UserID(), dev))
	must(t, alice.m.OlmMachine().CryptoStore.RemoveOutboundGroupSession(t.Context(), room))
	send(t, alice, room, matrix.Text("status 2"))
	bob.got.wait(t, "status 2")
	st, err = alice.m.RoomKeyStatus(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.SharedWith) != 1 || st.SharedWith[0].Device != bob.c.DeviceID() || len(st.WithheldFrom) != 0 {
		t.Errorf("after verifying bob: shared with %+v, withheld from %+v; want bob's device only, shared", st.SharedWith, st.WithheldFrom)
	}
}
