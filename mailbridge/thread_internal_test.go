package mailbridge

import (
	"io"
	"log/slog"
	"testing"

	"maunium.net/go/mautrix/id"
)

// TestThreadPlacement: where mails go in a room's threads, in order and out of order, on SQLite
// and PostgreSQL. Event IDs are recorded by hand here (the outbox would), so no homeserver is
// needed.
func TestThreadPlacement(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			if dialect == "postgres" && testing.Short() {
				t.Skip("starts PostgreSQL")
			}
			sp, db := openTestSpool(t, dialect) // commit_test.go
			g := &Gateway{spool: sp, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			const room = id.RoomID("!r:hs.example")
			post := func(m *Mail, evt id.EventID) threadPlace {
				t.Helper()
				p, err := g.place(t.Context(), room, m, 0)
				if err != nil {
					t.Fatalf("place %s: %v", m.MessageID, err)
				}
				if err := g.remember(t.Context(), room, m, 1, p); err != nil {
					t.Fatal(err)
				}
				if _, err := db.Exec(t.Context(), `UPDATE samtal_mail_thread SET event_id = $1 WHERE room_id = $2 AND message_id = $3`, evt, room, m.MessageID); err != nil {
					t.Fatal(err)
				}
				return p
			}
			if p := post(&Mail{MessageID: "a@x"}, "$a"); p.root != "" || p.rootMessageID != "a@x" {
				t.Errorf("first mail placed %+v", p)
			}
			if p := post(&Mail{MessageID: "b@x", InReplyTo: []string{"a@x"}, References: []string{"a@x"}}, "$b"); p.root != "$a" || p.latest != "$a" {
				t.Errorf("reply placed %+v", p)
			}
			// Only References, naming a mail that never came and one that did.
			if p := post(&Mail{MessageID: "c@x", References: []string{"lost@x", "b@x"}}, "$c"); p.root != "$a" {
				t.Errorf("reply by References placed %+v", p)
			}
			// Posted again (a retry, the same mail twice): the same place.
			if p, err := g.place(t.Context(), room, &Mail{MessageID: "b@x"}, 0); err != nil || p.root != "$a" {
				t.Errorf("b again placed %+v, %v", p, err)
			}
			// Out of order: the answer first, then the question, then a sibling naming only
			// the question.
			if p := post(&Mail{MessageID: "ans@x", InReplyTo: []string{"q@x"}, References: []string{"q@x"}}, "$ans"); p.root != "" {
				t.Errorf("early answer placed %+v", p)
			}
			if p := post(&Mail{MessageID: "q@x"}, "$q"); p.root != "$ans" || p.rootMessageID != "ans@x" {
				t.Errorf("late question placed %+v", p)
			}
			if p := post(&Mail{MessageID: "sib@x", InReplyTo: []string{"q@x"}}, "$sib"); p.root != "$ans" {
				t.Errorf("sibling placed %+v", p)
			}
			// A mail without a Message-ID is threaded by what it names, and not recorded.
			if p := post(&Mail{InReplyTo: []string{"a@x"}}, ""); p.root != "$a" {
				t.Errorf("mail without Message-ID placed %+v", p)
			}
			// Another room has its own threads.
			if p, err := g.place(t.Context(), "!other:hs.example", &Mail{MessageID: "b2@x", InReplyTo: []string{"a@x"}}, 0); err != nil || p.root != "" {
				t.Errorf("in another room placed %+v, %v", p, err)
			}
		})
	}
}
