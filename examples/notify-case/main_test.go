package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestNotifyCase posts two updates about case 4711, one of them twice. The officer invited
// with the first finds the case room under its alias and reads each update once.
func TestNotifyCase(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "casebot")
	officer := srv.Client(t, "officer")
	cfg := config{
		Homeserver: srv.URL, User: "casebot", Password: password,
		DB:     t.TempDir() + "/casebot.db",
		Invite: []id.UserID{officer.UserID},
		Log:    slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	post := func(update int, title string) id.EventID {
		t.Helper()
		var out bytes.Buffer
		cfg.Out, cfg.Update = &out, update
		cfg.Case = matrix.CaseNotification{CaseID: "4711", Title: title, Fields: []matrix.Field{{Name: "Handler", Value: "Anna"}}}
		if err := run(t.Context(), cfg); err != nil {
			t.Fatalf("update %d: %v", update, err)
		}
		return id.EventID(strings.TrimSpace(out.String()))
	}

	first := post(1, "Application received")
	again := post(1, "Application received")
	second := post(2, "Decision made")
	if again != first || second == first {
		t.Errorf("event IDs: update 1 %s, then %s; update 2 %s", first, again, second)
	}

	room, err := officer.ResolveAlias(t.Context(), id.RoomAlias("#case-4711:"+srv.ServerName))
	if err != nil {
		t.Fatalf("the case room has no alias: %v", err)
	}
	if _, err := officer.JoinRoomByID(t.Context(), room.RoomID); err != nil {
		t.Fatalf("the officer was not invited: %v", err)
	}
	for evt, body := range map[id.EventID]string{first: "Case 4711: Application received\nHandler: Anna", second: "Case 4711: Decision made\nHandler: Anna"} {
		got := matrixtest.WaitEvent(t, officer, room.RoomID, func(e *event.Event) bool { return e.ID == evt }).Content.AsMessage()
		if got.MsgType != event.MsgNotice || got.Body != body {
			t.Errorf("the officer read %s %q, want a notice %q", got.MsgType, got.Body, body)
		}
	}
	resp, err := officer.Messages(t.Context(), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var updates int
	for _, e := range resp.Chunk {
		if e.Type == event.EventMessage {
			updates++
		}
	}
	if updates != 2 {
		t.Errorf("the room holds %d updates, want 2", updates)
	}
}
