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
	officer := srv.NewClient(t, "officer", matrixtest.Encrypted())
	cfg := config{
		Homeserver: srv.URL, User: "casebot", Password: password,
		DB:     t.TempDir() + "/casebot.db",
		Invite: []id.UserID{officer.UserID()},
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

	room, err := officer.Join(t.Context(), "#case-4711:"+srv.ServerName)
	if err != nil {
		t.Fatalf("the officer was not invited to the case room: %v", err)
	}
	inbox := matrixtest.NewRecorder(t, officer, room)
	for evt, body := range map[id.EventID]string{first: "Case 4711: Application received\nHandler: Anna", second: "Case 4711: Decision made\nHandler: Anna"} {
		got := inbox.Wait(t, func(e *matrix.Event) bool { return e.ID == evt })
		msg := got.Content.AsMessage()
		if msg.MsgType != event.MsgNotice || msg.Body != body || !got.Mautrix.WasEncrypted {
			t.Errorf("the officer read %s %q (encrypted: %t), want an encrypted notice %q", msg.MsgType, msg.Body, got.Mautrix.WasEncrypted, body)
		}
	}
	resp, err := officer.Mautrix().Messages(t.Context(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var updates int
	for _, e := range resp.Chunk {
		if e.Type == event.EventEncrypted || e.Type == event.EventMessage {
			updates++
		}
	}
	if updates != 2 {
		t.Errorf("the room holds %d updates, want 2", updates)
	}
}
