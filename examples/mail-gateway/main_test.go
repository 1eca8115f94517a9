package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestMailGateway: a mail sent to the address over SMTP arrives in the room as the officer
// sees it; the program stops cleanly when its context ends.
func TestMailGateway(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot, password := srv.RegisterUser(t, "mailbot")
	officer := srv.Client(t, "officer")
	resp, err := officer.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{
			Homeserver: srv.URL, User: "mailbot", Password: password, DB: t.TempDir() + "/mailbot.db",
			Address: "registry@agency.example", Room: string(resp.RoomID), Listen: "127.0.0.1:0",
			Log: slog.New(slog.NewTextHandler(t.Output(), nil)), OnListen: func(a string) { addr <- a },
		})
	}()
	var smtpAddr string
	select {
	case smtpAddr = <-addr:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "From: Case system <cases@agency.example>\r\nTo: registry@agency.example\r\nSubject: Case 4711\r\nMessage-ID: <4711@agency.example>\r\n\r\nDecision made: approved\r\n"
	if err := c.SendMail("cases@agency.example", []string{"registry@agency.example"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitEvent(t, officer, resp.RoomID, func(e *event.Event) bool {
		return e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "Decision made: approved")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run returned %v", err)
	}
}
