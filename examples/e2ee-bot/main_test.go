package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestE2EEBot: alice, an admin, invites the bot into an encrypted room and says "!echo hej";
// the bot joins and answers "hej", encrypted, and tells her on "!status" who it is.
func TestE2EEBot(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := startBot(t, srv, false)
	alice := newPerson(t, srv, "alice", e2ee.VerifyOptions{})
	room := alice.encryptedRoomWith(t, bot)

	alice.say(t, room, "!echo hej")
	answer := alice.await(t, func(e *matrix.Event) bool { return e.Sender == bot && e.Text() == "hej" })
	if !answer.Mautrix.WasEncrypted {
		t.Error("the bot's answer was not encrypted")
	}
	if msg := answer.Content.AsMessage(); msg.MsgType != event.MsgNotice {
		t.Errorf("the bot answered with a %s, want a notice", msg.MsgType)
	}

	alice.say(t, room, "!status")
	status := alice.await(t, func(e *matrix.Event) bool { return e.Sender == bot && strings.HasPrefix(e.Text(), "I am ") })
	want := "device " + string(alice.c.DeviceID()) + " is not verified"
	if !strings.Contains(status.Text(), want) || !strings.Contains(status.Text(), "fingerprint") {
		t.Errorf("!status answered %q, want it to say %q and give the fingerprint", status.Text(), want)
	}
}

// TestE2EEBotStrict: in strict mode the bot refuses alice's command from her unverified device
// and says why; alice verifies the bot, compares the emojis it posts with hers and answers
// "!yes"; then it takes her command.
func TestE2EEBotStrict(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := startBot(t, srv, true)
	var alice *person
	var room id.RoomID
	alice = newPerson(t, srv, "alice", e2ee.VerifyOptions{Confirm: func(ctx context.Context, sas e2ee.SAS) bool {
		// What the bot shows in the room must be what alice's client shows her.
		shown := alice.find(ctx, func(e *matrix.Event) bool { return e.Sender == bot && strings.Contains(e.Text(), "I see:") })
		if shown == nil {
			t.Error("the bot did not show its emojis")
			return false
		}
		if !strings.Contains(shown.Text(), sas.String()) {
			t.Errorf("the bot shows\n%s\nalice sees %s", shown.Text(), sas)
			alice.say(t, room, "!no")
			return false
		}
		alice.say(t, room, "!yes")
		return true
	}})
	room = alice.encryptedRoomWith(t, bot)

	alice.say(t, room, "!echo hej")
	refusal := alice.await(t, func(e *matrix.Event) bool { return e.Sender == bot && strings.Contains(e.Text(), "verified") })
	if !strings.Contains(refusal.Text(), "is not verified") {
		t.Errorf("the bot refused with %q, want it to say alice's device is not verified", refusal.Text())
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := alice.m.Verify(ctx, bot, ""); err != nil {
		t.Fatalf("alice verifies the bot: %v", err)
	}
	alice.say(t, room, "!echo hej igen")
	alice.await(t, func(e *matrix.Event) bool { return e.Sender == bot && e.Text() == "hej igen" })
}

// startBot registers the bot's account and runs it with alice as its admin.
func startBot(t *testing.T, srv *matrixtest.Server, strict bool) id.UserID {
	t.Helper()
	bot, password := srv.RegisterUser(t, "e2eebot")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{
			Homeserver: srv.URL, User: "e2eebot", Password: password,
			DB: filepath.Join(dir, "bot.db"), PickleKeyFile: filepath.Join(dir, "pickle.key"),
			Admins: []id.UserID{srv.UserID("alice")}, Strict: strict,
			Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the bot stopped with %v", err)
		}
	})
	return bot
}

// person is someone with an encrypted client, as Element would be.
type person struct {
	c     *matrix.Client
	m     *e2ee.Machine
	inbox *matrixtest.Recorder
}

func newPerson(t *testing.T, srv *matrixtest.Server, localpart string, vopts e2ee.VerifyOptions) *person {
	t.Helper()
	if vopts.Confirm == nil {
		vopts.Confirm = func(context.Context, e2ee.SAS) bool { return false }
	}
	p := &person{}
	p.c = srv.NewClient(t, localpart,
		matrixtest.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))),
		matrixtest.OnEncrypted(func(m *e2ee.Machine) error {
			p.m = m
			return m.EnableVerification(context.Background(), vopts)
		}))
	p.inbox = matrixtest.NewRecorder(t, p.c, "")
	return p
}

// encryptedRoomWith creates an encrypted room, invites user and waits until they joined.
func (p *person) encryptedRoomWith(t *testing.T, user id.UserID) id.RoomID {
	t.Helper()
	room, err := p.c.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.PrivateChat, Invite: []id.UserID{user}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.c.RoomEncrypted(t.Context(), room); err != nil || !ok {
		t.Fatalf("the room is not encrypted (%v)", err)
	}
	matrixtest.Eventually(t, func() error {
		var member event.MemberEventContent
		if err := p.c.Mautrix().StateEvent(t.Context(), room, event.StateMember, string(user), &member); err != nil {
			return err
		}
		if member.Membership != event.MembershipJoin {
			return fmt.Errorf("%s is %s", user, member.Membership)
		}
		return nil
	})
	return room
}

func (p *person) say(t *testing.T, room id.RoomID, text string) {
	t.Helper()
	if _, err := p.c.Send(t.Context(), room, matrix.Text(text), matrix.SendOptions{}); err != nil {
		t.Error(err)
	}
}

// await returns the first message, decrypted, that match accepts.
func (p *person) await(t *testing.T, match func(*matrix.Event) bool) *matrix.Event {
	t.Helper()
	return p.inbox.Wait(t, match)
}

// find returns the first message that match accepts, or nil if ctx ends first. Unlike await it
// does not fail the test, so that the verification's goroutine may call it.
func (p *person) find(ctx context.Context, match func(*matrix.Event) bool) *matrix.Event {
	for ctx.Err() == nil {
		for _, e := range p.inbox.Events() {
			if match(e) {
				return e
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
