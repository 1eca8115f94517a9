package identity_test

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestCrossAgencyChat: an officer at agency A finds a colleague at agency B by email (the
// domain resolver guesses B's user ID and B's server confirms it over federation), StartChat
// makes one encrypted direct chat, a second call returns the same room, and both read each
// other's messages.
func TestCrossAgencyChat(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts two federating homeservers")
	}
	fed := matrixtest.NewFederation(t, 2)
	a := fed[0].NewClient(t, "officer", matrixtest.Encrypted())
	b := fed[1].NewClient(t, "karin.lund", matrixtest.Encrypted())
	fed[1].RegisterUser(t, "per-agency-c.test")
	aGot, bGot := matrixtest.NewRecorder(t, a, ""), matrixtest.NewRecorder(t, b, "")
	ctx := t.Context()

	table := identity.StaticDomains{
		"agency-b.test": {ServerName: fed[1].ServerName},
		// Agency C's people live on B's server, Tchap style.
		"agency-c.test": {ServerName: fed[1].ServerName, Localpart: "{local}-{domain}"},
	}
	dir := identity.NewDirectory(identity.DirectoryOptions{}, identity.NewDomainResolver(a, table, identity.DomainOptions{}))

	t.Run("lookup", func(t *testing.T) {
		m, err := dir.Lookup(ctx, "Karin.Lund@agency-b.test")
		if err != nil {
			t.Fatal(err)
		}
		if m.UserID != b.UserID() || m.Source != "domain" || m.Detail == "" {
			t.Fatalf("Lookup = %+v, want %s from the domain resolver", m, b.UserID())
		}
		m, err = dir.Lookup(ctx, "per@agency-c.test")
		if err != nil || m.UserID != fed[1].UserID("per-agency-c.test") {
			t.Fatalf("{local}-{domain}: %+v, %v", m, err)
		}
		// B's server says there is no such user: not found, never the guess.
		_, err = dir.Lookup(ctx, "nobody@agency-b.test")
		var nf *identity.NotFoundError
		if !errors.As(err, &nf) || !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("unknown user at B: %v, want a *NotFoundError", err)
		}
		// A domain in no agency's table.
		if _, err := dir.Lookup(ctx, "someone@elsewhere.test"); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("unknown domain: %v, want ErrNotFound", err)
		}
	})

	t.Run("lookup through the federation list", func(t *testing.T) {
		// The same lookup with the domain table read from a signed federation list.
		ed := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
		signed, err := federation.Sign(federation.Document{
			Version: 1, IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour),
			Members: []federation.Member{
				{Name: "Agency A", OrgNumber: "202100-0001", Servers: []string{fed[0].ServerName}, EmailDomains: []string{"agency-a.test"}, Contact: "ops@agency-a.test"},
				{Name: "Agency B", OrgNumber: "202100-0002", Servers: []string{fed[1].ServerName}, EmailDomains: []string{"agency-b.test"}, Contact: "ops@agency-b.test"},
			},
		}, ed)
		if err != nil {
			t.Fatal(err)
		}
		list, err := federation.Parse(signed, ed.Public(), time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		dir := identity.NewDirectory(identity.DirectoryOptions{}, identity.NewDomainResolver(a, identity.FederationMembers{List: list}, identity.DomainOptions{}))
		m, err := dir.Lookup(ctx, "Karin.Lund@agency-b.test")
		if err != nil || m.UserID != b.UserID() || m.Source != "domain" {
			t.Fatalf("Lookup through the list = %+v, %v, want %s", m, err, b.UserID())
		}
		// agency-c.test is in the static table above, not in the list: unknown here.
		if _, err := dir.Lookup(ctx, "per@agency-c.test"); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("a domain not in the list: %v, want ErrNotFound", err)
		}
	})

	chats := identity.NewChats(a, dir, identity.ChatOptions{})
	first, err := chats.StartChat(ctx, "karin.lund@agency-b.test")
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created || first.With.UserID != b.UserID() {
		t.Fatalf("first StartChat = %+v", first)
	}
	if enc, err := a.RoomEncrypted(ctx, first.Room); err != nil || !enc {
		t.Fatalf("the direct chat is not encrypted (%v)", err)
	}
	again, err := chats.StartChat(ctx, "karin.lund@agency-b.test")
	if err != nil {
		t.Fatal(err)
	}
	if again.Room != first.Room || again.Created {
		t.Fatalf("second StartChat = %+v, want the room %s again", again, first.Room)
	}

	// B accepts the invite once it has come over federation.
	matrixtest.Eventually(t, func() error {
		_, err := b.Join(ctx, string(first.Room))
		return err
	})
	waitJoined(t, a, first.Room, b.UserID())
	send(t, a, first.Room, "hello from agency A")
	bGot.WaitText(t, "hello from agency A")
	send(t, b, first.Room, "hello back from agency B")
	aGot.WaitText(t, "hello back from agency B")

	// A third call, now that both are joined, still returns the same room.
	if third, err := chats.StartChat(ctx, "karin.lund@agency-b.test"); err != nil || third.Room != first.Room {
		t.Fatalf("third StartChat = %+v, %v", third, err)
	}
}

func waitJoined(t *testing.T, c *matrix.Client, room id.RoomID, user id.UserID) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		members, err := c.Mautrix().JoinedMembers(t.Context(), room)
		if err != nil {
			return err
		}
		if _, ok := members.Joined[user]; !ok {
			return errors.New(string(user) + " has not joined yet")
		}
		return nil
	})
}

func send(t *testing.T, c *matrix.Client, room id.RoomID, text string) {
	t.Helper()
	p, err := c.Send(t.Context(), room, matrix.Text(text), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}
