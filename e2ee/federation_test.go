package e2ee_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestEncryptedAcrossAgencies: two agencies, each with its own homeserver, talk in an encrypted
// room; keys and messages cross the federation.
func TestEncryptedAcrossAgencies(t *testing.T) {
	servers := matrixtest.NewFederation(t, 2)
	alice := newParty(t, servers[0], "alice")
	bob := newParty(t, servers[1], "bob")
	room, err := alice.c.CreateRoom(t.Context(), matrix.RoomSpec{Name: "two agencies", Invite: []id.UserID{bob.c.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	// The invite travels over federation; join once it has arrived.
	matrixtest.Eventually(t, func() error { _, err := bob.c.Join(t.Context(), string(room)); return err })
	send(t, alice, room, matrix.Text("Hej från myndighet A"))
	got := bob.got.wait(t, "Hej från myndighet A")
	if !got.Mautrix.WasEncrypted {
		t.Error("not encrypted")
	}
	send(t, bob, room, matrix.Text("Hej tillbaka från myndighet B"))
	alice.got.wait(t, "Hej tillbaka från myndighet B")
}
