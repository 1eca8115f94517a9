// Echo-bot answers "!echo TEXT" with TEXT, in the rooms that people it trusts invite it to: the
// smallest bot built on samtal's Syncer and command router.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=echobot SAMTAL_DB=echobot.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only; the session is kept in the database
//	export ECHO_ALLOW=@anna:agency.example,@bo:agency.example
//	go run -tags goolm ./examples/echo-bot
//
// It accepts invites only from the users in ECHO_ALLOW and ignores everyone else's. It answers
// with a notice, the message type for bots, which other bots do not answer; "!help" lists the
// commands. After a restart it goes on where it stopped, without missing a command or
// answering one twice. Stop it with Ctrl-C.
//
// It reads and answers in unencrypted rooms only (it has no encryption: its Syncer never sees
// what is said in an encrypted room); e2ee-bot is the same bot for encrypted rooms.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// config is what the bot needs: its account and whom it trusts.
type config struct {
	Homeserver, User, Password, DB string

	Allow []id.UserID  // whose invites the bot accepts
	Log   *slog.Logger // nil means slog.Default()
}

func main() {
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"),
		User:       os.Getenv("SAMTAL_USER"),
		Password:   os.Getenv("SAMTAL_PASSWORD"),
		DB:         os.Getenv("SAMTAL_DB"),
	}
	if cfg.DB == "" {
		cfg.DB = "echo-bot.db"
	}
	for u := range strings.SplitSeq(os.Getenv("ECHO_ALLOW"), ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.Allow = append(cfg.Allow, id.UserID(u))
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// run runs the bot until ctx ends.
func run(ctx context.Context, cfg config) error {
	if len(cfg.Allow) == 0 {
		return errors.New("ECHO_ALLOW names nobody: the bot would join no room")
	}
	for _, u := range cfg.Allow {
		if err := matrix.ValidateUserID(u); err != nil {
			return fmt.Errorf("ECHO_ALLOW: %w", err)
		}
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: cfg.Homeserver,
		Login:         matrix.Password(cfg.User, cfg.Password),
		DB:            db,
		Logger:        cfg.Log,
	})
	if err != nil {
		return err
	}
	defer c.Close()

	cmds := matrix.NewCommands("!")
	cmds.Handle("echo", "TEXT: say TEXT back", func(ctx context.Context, cmd *matrix.Command) error {
		text := cmd.Raw
		if strings.TrimSpace(text) == "" {
			text = "Usage: !echo TEXT"
		}
		_, err := cmd.Reply(ctx, matrix.Notice(text))
		return err
	})

	s := c.NewSyncer(matrix.SyncOptions{AutoJoin: &matrix.AutoJoinPolicy{Users: cfg.Allow}})
	s.OnMessage(cmds.Handler())
	c.Logger().Info("echo-bot is running", "user", c.UserID(), "allow", cfg.Allow)
	return s.Run(ctx)
}
