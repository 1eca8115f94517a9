package matrix_test

import (
	"context"
	"errors"
	"log"
	"os"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// The first run logs in with the password and stores the session in the database; every later
// run continues as the same device, with no password needed.
func ExampleNew() {
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, "/var/lib/case-system/samtal.db") // or a postgres:// URL
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: "https://matrix.example.se",
		Login:         matrix.Password("case-bot", os.Getenv("CASE_BOT_PASSWORD")),
		DB:            db,
	})
	if errors.Is(err, matrix.ErrLogin) {
		log.Fatalf("check the bot's credentials: %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	log.Printf("running as %s on device %s", c.UserID(), c.DeviceID())
}

// Send stores the message and returns at once; Wait blocks until the homeserver has it. The
// idempotency key makes a retry of the same logical update, after a crash of the case system
// say, a no-op.
func ExampleClient_Send() {
	ctx := context.Background()
	var c *matrix.Client // from matrix.New
	room := id.RoomID("!caseroom:example.se")

	note, err := matrix.CaseNotification{
		CaseID:   "4711",
		Title:    "Decision made",
		Fields:   []matrix.Field{{Name: "Outcome", Value: "Approved"}, {Name: "Handler", Value: "Anna Svensson"}},
		Link:     "https://cases.example.se/4711",
		Severity: matrix.SeverityInfo,
	}.Message()
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.Send(ctx, room, note, matrix.SendOptions{IdempotencyKey: "case-4711/decision"})
	if err != nil {
		log.Fatal(err)
	}
	eventID, err := p.Wait(ctx)
	var sendErr *matrix.SendError
	switch {
	case errors.As(err, &sendErr) && errors.Is(err, matrix.ErrForbidden):
		log.Printf("the bot may not post in %s: %v", room, err)
	case err != nil:
		log.Fatal(err)
	default:
		log.Printf("posted as %s", eventID)
	}
}

// A file goes through the same outbox; in an encrypted room it is encrypted before upload.
func ExampleClient_SendFile() {
	ctx := context.Background()
	var c *matrix.Client // from matrix.New
	pdf, err := os.ReadFile("beslut-4711.pdf")
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.SendFile(ctx, "!caseroom:example.se", matrix.Attachment{Name: "beslut-4711.pdf", Data: pdf},
		matrix.SendOptions{IdempotencyKey: "case-4711/decision-pdf"})
	if err != nil {
		log.Fatal(err)
	}
}
