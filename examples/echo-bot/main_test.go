package main

import (
	"context"
	"log/slog"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestEchoBot: alice, whom the bot trusts, invites it and says "!echo hej"; the bot joins and
// answers "hej". A stranger's invite, sent before alice's, stays unanswered.
func TestEchoBot(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot, password := srv.RegisterUser(t, "echobot")
	alice := srv.Client(t, "alice")
	mallory := srv.Client(t, "mallory")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{
			Homeserver: srv.URL, User: "echobot", Password: password, DB: t.TempDir() + "/echobot.db",
			Allow: []id.UserID{alice.UserID},
			Log:   slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the bot stopped with %v", err)
		}
	})

	strangers := createRoom(t, mallory, bot)
	room := createRoom(t, alice, bot)
	matrixtest.WaitEvent(t, alice, room, func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == string(bot) && e.Content.AsMember().Membership == event.MembershipJoin
	})

	cmd, err := alice.SendText(t.Context(), room, "!echo hej")
	if err != nil {
		t.Fatal(err)
	}
	answer := matrixtest.WaitEvent(t, alice, room, func(e *event.Event) bool { return e.Sender == bot && e.Type == event.EventMessage })
	msg := answer.Content.AsMessage()
	if msg.Body != "hej" || msg.MsgType != event.MsgNotice || msg.RelatesTo.GetReplyTo() != cmd.EventID {
		t.Errorf("the bot answered %s %q in reply to %s; want a notice \"hej\" in reply to %s", msg.MsgType, msg.Body, msg.RelatesTo.GetReplyTo(), cmd.EventID)
	}

	// The bot has handled alice's invite, and so every invite before it.
	var member event.MemberEventContent
	if err := mallory.StateEvent(t.Context(), strangers, event.StateMember, string(bot), &member); err != nil {
		t.Fatal(err)
	}
	if member.Membership != event.MembershipInvite {
		t.Errorf("in mallory's room the bot's membership is %q, want invite", member.Membership)
	}
}

// createRoom has cli create a room and invite user.
func createRoom(t *testing.T, cli *mautrix.Client, user id.UserID) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{user}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}
