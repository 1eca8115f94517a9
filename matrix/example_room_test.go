package matrix_test

import (
	"context"
	"log"
	"os"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// A case system opens one room per case. Every worker that handles case 4711 asks for its room
// the same way; whichever asks first creates it, the others get the same room.
func ExampleClient_EnsureRoom() {
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, "samtal.db")
	if err != nil {
		log.Fatal(err)
	}
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: "https://matrix.example.se",
		Login:         matrix.Password("case-bot", os.Getenv("CASE_BOT_PASSWORD")),
		DB:            db,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	room, created, err := c.EnsureRoom(ctx, "#case-4711:example.se", matrix.RoomSpec{
		Preset: matrix.CaseRoom,
		CaseID: "4711",
		Name:   "Case 4711: building permit",
		Invite: []id.UserID{"@anna.svensson:example.se"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if created {
		log.Printf("opened %s for case 4711", room)
	}
	if _, err := c.Send(ctx, room, matrix.Notice("Case 4711 was assigned to Anna Svensson."),
		matrix.SendOptions{IdempotencyKey: "case-4711/assigned"}); err != nil {
		log.Fatal(err)
	}
}
