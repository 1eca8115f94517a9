package matrix_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestInTransaction: sends in InTransaction commit with what the caller writes in it, and go
// out after the commit; after a rollback neither the send nor the caller's write is there,
// and the send never reaches the room.
func TestInTransaction(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	ctx := t.Context()
	resp, err := bot.Mautrix().CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	db := bot.Database()
	if _, err := db.Exec(ctx, `CREATE TABLE app_note (note TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	var void *matrix.Pending
	undo := errors.New("undo")
	err = bot.InTransaction(ctx, func(ctx context.Context) error {
		if void, err = bot.Send(ctx, room, matrix.Text("rolled back"), matrix.SendOptions{}); err != nil {
			return err
		}
		if _, err := db.Exec(ctx, `INSERT INTO app_note (note) VALUES ('rolled back')`); err != nil {
			return err
		}
		return undo
	})
	if !errors.Is(err, undo) {
		t.Fatalf("InTransaction = %v, want fn's error", err)
	}
	var kept *matrix.Pending
	err = bot.InTransaction(ctx, func(ctx context.Context) error {
		if kept, err = bot.Send(ctx, room, matrix.Text("committed"), matrix.SendOptions{}); err != nil {
			return err
		}
		_, err := db.Exec(ctx, `INSERT INTO app_note (note) VALUES ('committed')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Wait(ctx); err != nil {
		t.Fatalf("the committed send: %v", err)
	}
	var notes []string
	rows, err := db.Query(ctx, `SELECT note FROM app_note`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		notes = append(notes, n)
	}
	rows.Close()
	if len(notes) != 1 || notes[0] != "committed" {
		t.Errorf("notes %v, want only the committed one", notes)
	}
	unsent, err := bot.Unsent(ctx, []int64{void.ID})
	if err != nil || unsent[void.ID] {
		t.Errorf("the rolled back send is pending (%v, %v)", unsent, err)
	}
	// Dendrite answers /messages from its sync stream, which can lag behind the send.
	var bodies []string
	matrixtest.Eventually(t, func() error {
		msgs, err := bot.Mautrix().Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			return err
		}
		bodies = nil
		for _, e := range msgs.Chunk {
			if e.Type == event.EventMessage {
				_ = e.Content.ParseRaw(e.Type)
				bodies = append(bodies, e.Content.AsMessage().Body)
			}
		}
		if !slices.Contains(bodies, "committed") {
			return fmt.Errorf("the room has %q, not yet the committed message", bodies)
		}
		return nil
	})
	if len(bodies) != 1 {
		t.Errorf("the room has %q, want only the committed message", bodies)
	}
}
