// Notify-case posts an update about a case into the case's own room, and creates the room with
// the first update: what a case-management system does when one of its cases changes.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=casebot SAMTAL_DB=casebot.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only; the session is kept in the database
//	go run -tags goolm ./examples/notify-case -case 4711 -update 3 -title "Decision made" \
//		-link https://cases.agency.example/4711 -invite @anna:agency.example
//
// The room is #case-4711 on the bot's server, a CaseRoom tagged with the case ID, and whoever
// -invite names is invited when it is created. The update goes out with the idempotency key
// case-4711/update-3, so that running the same update twice (the case system retrying after a
// crash, say) posts it once. The program prints the event ID.
//
// Case rooms are end-to-end encrypted, so the bot turns encryption on: its device's keys are
// kept in the database, encrypted with the pickle key in SAMTAL_PICKLE_KEY_FILE (default: the
// database's path + .pickle-key, created 0600 on the first run).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
)

// config is what the program needs: the account and the update.
type config struct {
	Homeserver, User, Password, DB string
	PickleKey                      string // file with the pickle key; "" means DB + ".pickle-key"

	Case   matrix.CaseNotification // the update; Case.CaseID names the room
	Update int                     // the update's number in the case system, for its idempotency key
	Invite []id.UserID             // invited when the case room is created

	Out io.Writer    // where the event ID is printed
	Log *slog.Logger // nil means slog.Default()
}

func main() {
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"),
		User:       os.Getenv("SAMTAL_USER"),
		Password:   os.Getenv("SAMTAL_PASSWORD"),
		DB:         os.Getenv("SAMTAL_DB"),
		PickleKey:  os.Getenv("SAMTAL_PICKLE_KEY_FILE"),
		Out:        os.Stdout,
	}
	flag.StringVar(&cfg.Case.CaseID, "case", "4711", "the case ID")
	flag.IntVar(&cfg.Update, "update", 1, "the update's number, which makes it idempotent")
	flag.StringVar(&cfg.Case.Title, "title", "Case updated", "what happened")
	flag.StringVar(&cfg.Case.Link, "link", "", "the case in the case system (https)")
	invite := flag.String("invite", "", "comma-separated user IDs to invite when the room is created")
	flag.Parse()
	for u := range strings.SplitSeq(*invite, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.Invite = append(cfg.Invite, id.UserID(u))
		}
	}
	if cfg.DB == "" {
		cfg.DB = "notify-case.db"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// run posts the update into the case's room, creating the room first if the case has none.
func run(ctx context.Context, cfg config) error {
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
	if cfg.PickleKey == "" {
		cfg.PickleKey = cfg.DB + ".pickle-key"
	}
	pickleKey, err := e2ee.LoadOrCreatePickleKey(cfg.PickleKey)
	if err != nil {
		return err
	}
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: pickleKey})
	if err != nil {
		return err
	}
	defer m.Close()

	caseID := cfg.Case.CaseID
	alias := id.NewRoomAlias("case-"+strings.ToLower(caseID), c.UserID().Homeserver())
	room, created, err := c.EnsureRoom(ctx, alias, matrix.RoomSpec{
		Preset: matrix.CaseRoom,
		CaseID: caseID,
		Name:   "Case " + caseID,
		Invite: cfg.Invite,
	})
	if err != nil {
		return fmt.Errorf("room for case %s: %w", caseID, err)
	}
	if created {
		c.Logger().Info("created the case room", "case", caseID, "room", room, "alias", alias)
	}

	msg, err := cfg.Case.Message()
	if err != nil {
		return err
	}
	key := fmt.Sprintf("case-%s/update-%d", caseID, cfg.Update)
	p, err := c.Send(ctx, room, msg, matrix.SendOptions{IdempotencyKey: key})
	if err != nil {
		return err
	}
	eventID, err := p.Wait(ctx)
	if err != nil {
		return fmt.Errorf("update %s: %w", key, err)
	}
	_, err = fmt.Fprintln(cfg.Out, eventID)
	return err
}
