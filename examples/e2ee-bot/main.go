// E2ee-bot is a bot for end-to-end encrypted rooms: it answers "!echo TEXT" and "!status" in
// the rooms its admins invite it to, and its admins can verify it from Element by comparing
// emojis. Build it with -tags goolm (mautrix's pure-Go Olm; no cgo needed).
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=casebot SAMTAL_DB=casebot.db
//	export SAMTAL_PASSWORD=...                          # first run only; the session is kept in the database
//	export SAMTAL_PICKLE_KEY_FILE=/etc/casebot/pickle.key # created on the first run; back it up with the database
//	export BOT_ADMINS=@anna:agency.example,@bo:agency.example
//	export BOT_STRICT=1                                 # optional: commands only from verified devices
//	go run -tags goolm ./examples/e2ee-bot
//
// Only admins (BOT_ADMINS) get the bot into rooms, use its commands and may verify it. To
// verify it, an admin opens the bot's session in Element and chooses to verify it; the bot
// posts the emojis it sees into the rooms it shares with that admin, and the admin answers
// "!yes" if Element shows the same ones, "!no" if not. "!status" shows the bot's device and
// fingerprint and how far it trusts the device that asked.
//
// With BOT_STRICT=1 the bot refuses commands from devices it has not verified, and says why;
// "!status", "!yes" and "!no" still work, so that an admin can get verified. The database and
// the pickle key hold the bot's device keys: losing either means a new device, which admins
// verify again.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
)

// config is what the bot needs: its account, its keys and whom it trusts.
type config struct {
	Homeserver, User, Password, DB string
	PickleKeyFile                  string // where the key that encrypts the crypto store is kept

	Admins []id.UserID  // who may invite, command and verify the bot
	Strict bool         // commands only from verified devices
	Log    *slog.Logger // nil means slog.Default()
}

func main() {
	cfg := config{
		Homeserver:    os.Getenv("SAMTAL_HOMESERVER"),
		User:          os.Getenv("SAMTAL_USER"),
		Password:      os.Getenv("SAMTAL_PASSWORD"),
		DB:            os.Getenv("SAMTAL_DB"),
		PickleKeyFile: os.Getenv("SAMTAL_PICKLE_KEY_FILE"),
		Strict:        os.Getenv("BOT_STRICT") == "1",
	}
	if cfg.DB == "" {
		cfg.DB = "e2ee-bot.db"
	}
	if cfg.PickleKeyFile == "" {
		cfg.PickleKeyFile = cfg.DB + ".pickle-key"
	}
	for u := range strings.SplitSeq(os.Getenv("BOT_ADMINS"), ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.Admins = append(cfg.Admins, id.UserID(u))
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
	if len(cfg.Admins) == 0 {
		return errors.New("BOT_ADMINS names nobody: the bot would join no room and take no command")
	}
	for _, u := range cfg.Admins {
		if err := matrix.ValidateUserID(u); err != nil {
			return fmt.Errorf("BOT_ADMINS: %w", err)
		}
	}
	key, err := e2ee.LoadOrCreatePickleKey(cfg.PickleKeyFile)
	if err != nil {
		return err
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
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: key})
	if err != nil {
		return err
	}
	defer m.Close()

	b := &bot{c: c, m: m, admins: cfg.Admins, strict: cfg.Strict, waiting: map[id.UserID]chan bool{}}
	if err := m.EnableVerification(ctx, e2ee.VerifyOptions{Allow: b.isAdmin, Confirm: b.confirm}); err != nil {
		return err
	}
	s := c.NewSyncer(matrix.SyncOptions{AutoJoin: &matrix.AutoJoinPolicy{Users: cfg.Admins}})
	s.OnMessage(b.handler())
	c.Logger().Info("e2ee-bot is running", "user", c.UserID(), "device", c.DeviceID(), "fingerprint", m.Fingerprint(),
		"admins", cfg.Admins, "strict", cfg.Strict)
	return s.Run(ctx)
}

// bot holds the commands and the verifications waiting for an admin's answer.
type bot struct {
	c      *matrix.Client
	m      *e2ee.Machine
	admins []id.UserID
	strict bool

	mu      sync.Mutex
	waiting map[id.UserID]chan bool // an admin's "!yes" or "!no" for the SAS shown to them
}

func (b *bot) isAdmin(_ context.Context, user id.UserID) bool { return slices.Contains(b.admins, user) }

// handler routes admins' commands, refusing those from unverified devices in strict mode.
func (b *bot) handler() func(ctx context.Context, evt *matrix.Event) error {
	cmds := matrix.NewCommands("!")
	cmds.Handle("echo", "TEXT: say TEXT back", func(ctx context.Context, cmd *matrix.Command) error {
		text := cmd.Raw
		if strings.TrimSpace(text) == "" {
			text = "Usage: !echo TEXT"
		}
		_, err := cmd.Reply(ctx, matrix.Notice(text))
		return err
	})
	cmds.Handle("status", "this bot's device, and how far it trusts yours", b.status)
	cmds.Handle("yes", "the emojis match: confirm the verification", b.answer(true))
	cmds.Handle("no", "the emojis differ: cancel the verification", b.answer(false))
	route := cmds.Handler()
	// Commands that an unverified device may use even in strict mode: to learn why it is
	// refused, and to get verified.
	open := []string{"status", "yes", "no", "help"}
	return func(ctx context.Context, evt *matrix.Event) error {
		if !b.isAdmin(ctx, evt.Sender) {
			return nil
		}
		if b.strict && !verified(evt) {
			cmd, err := cmds.Parse(evt.Text())
			if err == nil && !slices.Contains(open, cmd.Name) {
				_, err := evt.Reply(ctx, matrix.Notice(fmt.Sprintf("I take commands only from verified devices, and %s. "+
					"Verify this bot (device %s, fingerprint %s) from your client, then try again.",
					describeSender(evt), b.c.DeviceID(), b.m.Fingerprint())))
				return err
			}
		}
		return route(ctx, evt)
	}
}

// status answers "!status".
func (b *bot) status(ctx context.Context, cmd *matrix.Command) error {
	text := fmt.Sprintf("I am %s, device %s, fingerprint %s. %s.", b.c.UserID(), b.c.DeviceID(), b.m.Fingerprint(),
		upperFirst(describeSender(cmd.Event)))
	if b.strict {
		text += " I take commands only from verified devices."
	}
	_, err := cmd.Reply(ctx, matrix.Notice(text))
	return err
}

// answer returns the command that passes an admin's "!yes" or "!no" to the verification
// waiting for it.
func (b *bot) answer(match bool) func(ctx context.Context, cmd *matrix.Command) error {
	return func(ctx context.Context, cmd *matrix.Command) error {
		b.mu.Lock()
		ch := b.waiting[cmd.Event.Sender]
		delete(b.waiting, cmd.Event.Sender)
		b.mu.Unlock()
		if ch == nil {
			_, err := cmd.Reply(ctx, matrix.Notice("No verification of yours is waiting for an answer."))
			return err
		}
		ch <- match
		return nil
	}
}

// confirm is the bot's VerifyOptions.Confirm: it shows the admin who is verifying the bot the
// emojis it sees, in the rooms they share, and waits for "!yes" or "!no".
func (b *bot) confirm(ctx context.Context, sas e2ee.SAS) bool {
	log := b.c.Logger().With("user", sas.With, "device", sas.Device)
	rooms, err := b.m.OlmMachine().StateStore.FindSharedRooms(ctx, sas.With)
	if err != nil || len(rooms) == 0 {
		log.Warn("no room to show the verification emojis in; invite the bot to one first", "err", err)
		return false
	}
	answer := make(chan bool, 1)
	b.mu.Lock()
	b.waiting[sas.With] = answer
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.waiting[sas.With] == answer {
			delete(b.waiting, sas.With)
		}
		b.mu.Unlock()
	}()
	text := fmt.Sprintf("%s, you are verifying this bot from your device %s. I see:\n%s\n"+
		"Answer !yes if your client shows the same, !no if it does not.", sas.With, sas.Device, sas)
	for _, room := range rooms {
		if _, err := b.c.Send(ctx, room, matrix.Notice(text), matrix.SendOptions{}); err != nil {
			log.Warn("cannot show the verification emojis", "room", room, "err", err)
		}
	}
	log.Info("verification: waiting for the admin to compare", "sas", sas.String())
	select {
	case ok := <-answer:
		return ok
	case <-ctx.Done():
		return false
	}
}

// verified reports whether the device that sent evt is verified: by this bot, or by a user
// the bot verified, through cross-signing.
func verified(evt *matrix.Event) bool {
	return evt.Mautrix.WasEncrypted && evt.Mautrix.TrustState >= id.TrustStateCrossSignedVerified
}

// describeSender says how far the bot trusts the device that sent evt.
func describeSender(evt *matrix.Event) string {
	if !evt.Mautrix.WasEncrypted {
		return "this room is not encrypted, so I cannot tell which device you wrote from"
	}
	device := "your device"
	if d := evt.Mautrix.TrustSource; d != nil {
		device += " " + d.DeviceID.String()
	}
	if verified(evt) {
		return device + " is verified"
	}
	if evt.Mautrix.TrustState == id.TrustStateUnset {
		return device + " is not verified"
	}
	return fmt.Sprintf("%s is not verified (trust: %s)", device, evt.Mautrix.TrustState)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
