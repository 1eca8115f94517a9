package matrix_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/samtalhq/samtal/matrix"
)

// A case bot: it accepts invites from colleagues on the agency's server and answers
// "!case 4711 status". It picks up where it stopped after a restart, without missing a message.
func ExampleClient_NewSyncer() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	db, err := matrix.OpenDatabase(ctx, "casebot.db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: "https://matrix.agency.example",
		Login:         matrix.Password("casebot", os.Getenv("CASEBOT_PASSWORD")),
		DB:            db,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cmds := matrix.NewCommands("!")
	cmds.Handle("case", "<id> status: show a case's status", func(ctx context.Context, cmd *matrix.Command) error {
		if len(cmd.Args) != 2 || cmd.Args[1] != "status" {
			_, err := cmd.Reply(ctx, matrix.Notice("Usage: !case <id> status"))
			return err
		}
		_, err := cmd.Reply(ctx, matrix.Notice("Case "+cmd.Args[0]+": awaiting decision"))
		return err
	})

	s := c.NewSyncer(matrix.SyncOptions{
		AutoJoin: &matrix.AutoJoinPolicy{Servers: []string{"agency.example"}},
	})
	s.OnMessage(cmds.Handler())
	if err := s.Run(ctx); err != nil {
		log.Fatal(err) // the session was revoked: log in again
	}
}
