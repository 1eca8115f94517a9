package e2ee_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestTrustPolicy: a bot that trusts verified devices only neither hands out what an
// unverified device says nor lets it read what the bot says; once the device is verified it
// does both. Each decrypted event says how far its sender's device was trusted.
func TestTrustPolicy(t *testing.T) {
	srv := matrixtest.NewServer(t)

	t.Run("AcceptFrom", func(t *testing.T) {
		board := newSASBoard()
		alice := newVerifyingParty(t, srv, "alice", e2ee.Options{PickleKey: testKey},
			e2ee.VerifyOptions{Confirm: board.confirm("alice", true)})
		bot := newVerifyingParty(t, srv, "strictbot", e2ee.Options{PickleKey: testKey, AcceptFrom: e2ee.Verified},
			e2ee.VerifyOptions{Allow: onlyUser(alice.c.UserID()), Confirm: board.confirm("bot", true)})
		room := encryptedRoom(t, alice.party, bot.party)

		send(t, alice.party, room, matrix.Text("!deploy före verifieringen"))
		waitFor(t, "the bot refuses the unverified device's message", func() bool { return bot.syncer.Stats().Rejected >= 1 })

		if err := alice.m.Verify(verifyContext(t), bot.c.UserID(), bot.c.DeviceID()); err != nil {
			t.Fatalf("verification: %v", err)
		}
		send(t, alice.party, room, matrix.Text("!deploy efter verifieringen"))
		got := bot.got.wait(t, "!deploy efter verifieringen")
		if got.Mautrix.TrustState != id.TrustStateVerified || !got.Mautrix.WasEncrypted {
			t.Errorf("the bot got alice's message with trust %s (encrypted %v), want verified", got.Mautrix.TrustState, got.Mautrix.WasEncrypted)
		}
		if n := bot.got.count("!deploy före verifieringen"); n != 0 {
			t.Errorf("the bot handed out the unverified device's message %d times", n)
		}
	})

	t.Run("ShareWith", func(t *testing.T) {
		board := newSASBoard()
		bot := newVerifyingParty(t, srv, "quietbot", e2ee.Options{PickleKey: testKey, ShareWith: e2ee.Verified},
			e2ee.VerifyOptions{Confirm: board.confirm("bot", true)})
		carol := newVerifyingParty(t, srv, "carol", e2ee.Options{PickleKey: testKey},
			e2ee.VerifyOptions{Allow: onlyUser(bot.c.UserID()), Confirm: board.confirm("carol", true)})
		room := encryptedRoom(t, carol.party, bot.party)

		// The bot reads carol (AcceptFrom is the default), and says how much it trusts her.
		send(t, carol.party, room, matrix.Text("hej från carol"))
		if got := bot.got.wait(t, "hej från carol"); got.Mautrix.TrustState != id.TrustStateUnset || !got.Mautrix.WasEncrypted {
			t.Errorf("the bot got carol's message with trust %s (encrypted %v), want unverified", got.Mautrix.TrustState, got.Mautrix.WasEncrypted)
		}

		// But gives her unverified device no key for what it says.
		send(t, bot.party, room, matrix.Notice("hemligt före verifieringen"))
		waitFor(t, "carol cannot decrypt the bot's message", func() bool { return carol.syncer.Stats().Undecryptable >= 1 })

		// The bot verifies carol's device; the next thing it says, she can read.
		if err := bot.m.Verify(verifyContext(t), carol.c.UserID(), carol.c.DeviceID()); err != nil {
			t.Fatalf("verification: %v", err)
		}
		send(t, bot.party, room, matrix.Notice("läsbart efter verifieringen"))
		got := carol.got.wait(t, "läsbart efter verifieringen")
		if got.Mautrix.TrustState != id.TrustStateVerified {
			t.Errorf("carol got the bot's message with trust %s, want verified", got.Mautrix.TrustState)
		}
		if n := carol.got.count("hemligt före verifieringen"); n != 0 {
			t.Errorf("carol read the message sent before she was verified")
		}
	})
}
