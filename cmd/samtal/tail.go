package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// maxHistory bounds how many events of a room's history tail reads back for --since.
const maxHistory = 5000

// runTail prints the history of rooms, if asked, and then the messages arriving in them until
// ctx ends (or, with --once, exits).
func runTail(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tail")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per message: event_id, room_id, sender, type, msgtype, body, formatted_body, ts, encrypted, trust, thread, reply_to")
	limit := fs.Int("limit", 0, "first print the last `N` messages of each room's history (with --once, default 10)")
	since := fs.String("since", "", "first print the history since `DURATION` ago (such as 2h) or since the event ID $EVENT")
	once := fs.Bool("once", false, "print the history and exit instead of waiting for new messages")
	setUsage(fs, "tail [flags] [ROOM...]", `Prints the messages arriving in each ROOM (a room ID or alias of a room the account is in;
none means every room) until interrupted, one line each: time, sender and body, with the
room after the time when there are several rooms. Line breaks in a body are shown as ↵.
With --limit or --since it first prints the rooms' history, decrypted where the device has
the keys (or finds them in the key backup); with --once it then exits.

tail stores how far it has read as the session's sync position: the next tail of the same
session starts where this one stopped and prints what came in between, and a message may be
printed twice after a crash (JSON output has the event ID to tell). Only one program may
receive with a session at a time: give tail its own --session if a bot uses the account.

`+credentialsHelp)
	rooms, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	for _, r := range rooms {
		if err := checkRoomArg(r); err != nil {
			return err
		}
	}
	window, err := parseHistoryFlags(*limit, *since, *once)
	if err != nil {
		return err
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	ids, err := resolveRooms(ctx, c, rooms)
	if err != nil {
		return err
	}
	only := map[id.RoomID]bool{}
	for _, r := range ids {
		only[r] = true
	}
	p := &printer{w: e.stdout, json: *asJSON, showRoom: len(ids) != 1, seen: map[id.EventID]bool{}}

	if window != nil {
		// One sync first, without printing: it brings the room keys sent to this device, so
		// that the history can be decrypted. What it delivers is in the history too.
		if err := syncOnce(ctx, c); err != nil {
			return err
		}
		if len(ids) == 0 {
			joined, err := c.Mautrix().JoinedRooms(ctx)
			if err != nil {
				return fmt.Errorf("list the account's rooms: %w", err)
			}
			ids = joined.JoinedRooms
			p.showRoom = len(ids) != 1
		}
		for _, room := range ids {
			if err := printHistory(ctx, c, acct.decrypter(), p, room, *window); err != nil {
				return err
			}
		}
		if *once {
			return nil
		}
	}

	s := c.NewSyncer(matrix.SyncOptions{IncludeOwn: true})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error {
		if len(only) > 0 && !only[evt.RoomID] {
			return nil
		}
		return p.print(evt.Event)
	})

	// Say on stderr when the first sync is through: what arrives from then on is printed.
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() {
		if waitFirstBatch(runCtx, s) != nil {
			return
		}
		what := "every room"
		if len(only) > 0 {
			what = fmt.Sprintf("%d rooms", len(only))
			if len(only) == 1 {
				what = string(ids[0])
			}
		}
		fmt.Fprintf(e.stderr, "samtal tail: receiving messages in %s as %s\n", what, c.UserID())
	})
	return s.Run(runCtx)
}

// historyWindow is how much of a room's history to print.
type historyWindow struct {
	limit int       // at most this many messages; 0 means no limit
	after time.Time // only messages from then on; zero means no bound
	event id.EventID
}

// parseHistoryFlags checks --limit, --since and --once; nil means no history.
func parseHistoryFlags(limit int, since string, once bool) (*historyWindow, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: --limit %d: want a number of messages, 0 or more", errUsage, limit)
	}
	w := &historyWindow{limit: limit}
	switch {
	case strings.HasPrefix(since, "$"):
		w.event = id.EventID(since)
	case since != "":
		d, err := time.ParseDuration(since)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: --since %q: want a duration such as 30m or 2h, or an event ID ($...)", errUsage, since)
		}
		w.after = time.Now().Add(-d)
	}
	switch {
	case limit == 0 && since == "" && !once:
		return nil, nil
	case limit == 0 && since == "":
		w.limit = 10
	}
	return w, nil
}

// decrypter is how tail reads encrypted history: the account's encryption, if it has any.
type decrypter interface {
	Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error)
}

func (a *account) decrypter() decrypter {
	if a.m == nil {
		return nil
	}
	return a.m
}

// syncOnce runs a Syncer until its first batch is through.
func syncOnce(ctx context.Context, c *matrix.Client) error {
	s := c.NewSyncer(matrix.SyncOptions{Timeout: time.Second})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(runCtx) }()
	waited := make(chan error, 1)
	go func() { waited <- waitFirstBatch(runCtx, s) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sync: %w", err)
	case err := <-waited:
		stop()
		<-errc
		return err
	}
}

// waitFirstBatch returns once s has handled a batch, or ctx ends.
func waitFirstBatch(ctx context.Context, s *matrix.Syncer) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for s.Stats().Batches == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// printHistory prints the messages of room within w, oldest first.
func printHistory(ctx context.Context, c *matrix.Client, dec decrypter, p *printer, room id.RoomID, w historyWindow) error {
	var msgs []*event.Event
	from := ""
	read := 0
walk:
	for read < maxHistory {
		resp, err := c.Mautrix().Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return fmt.Errorf("read the history of %s: %w", room, err)
		}
		for _, evt := range resp.Chunk {
			read++
			if evt.ID == w.event || (!w.after.IsZero() && time.UnixMilli(evt.Timestamp).Before(w.after)) {
				break walk
			}
			if evt.Type != event.EventMessage && evt.Type != event.EventEncrypted {
				continue
			}
			evt.RoomID = room
			msgs = append(msgs, evt)
			if w.limit > 0 && len(msgs) == w.limit {
				break walk
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			if w.event != "" {
				return fmt.Errorf("%w: --since %s: no such event in the last %d events of %s", matrix.ErrNotFound, w.event, read, room)
			}
			break
		}
		from = resp.End
	}
	slices.Reverse(msgs)
	for _, evt := range msgs {
		if err := p.print(readable(ctx, dec, evt)); err != nil {
			return err
		}
	}
	return nil
}

// readable returns evt with its content parsed, decrypted if it is encrypted and the keys are
// there (or in the key backup); an event that cannot be decrypted (no key, or a sender the
// trust policy refuses) comes back encrypted, and prints as such.
func readable(ctx context.Context, dec decrypter, evt *event.Event) *event.Event {
	if evt.Content.Parsed == nil {
		_ = evt.Content.ParseRaw(evt.Type) // unknown types keep their raw content
	}
	if evt.Type == event.EventEncrypted && dec != nil {
		if plain, err := dec.Decrypt(ctx, evt); err == nil {
			plain.RoomID = evt.RoomID
			evt = plain
		}
	}
	return evt
}

// printer writes messages as lines of text or JSON, each event once. The Syncer calls it from
// one goroutine, and the history is printed before the Syncer runs.
type printer struct {
	w        io.Writer
	json     bool
	showRoom bool
	seen     map[id.EventID]bool
}

type tailLine struct {
	EventID       id.EventID `json:"event_id"`
	RoomID        id.RoomID  `json:"room_id"`
	Sender        id.UserID  `json:"sender"`
	Type          string     `json:"type"`    // the event type: m.room.message, or m.room.encrypted when it could not be decrypted
	MsgType       string     `json:"msgtype"` // m.text, m.notice, m.file...
	Body          string     `json:"body"`
	FormattedBody string     `json:"formatted_body,omitempty"` // HTML, when the message has it
	TS            int64      `json:"ts"`                       // origin_server_ts, milliseconds since 1970
	Encrypted     bool       `json:"encrypted"`                // sent end-to-end encrypted
	Trust         string     `json:"trust,omitempty"`          // how far the sender's device is trusted, for encrypted messages
	Thread        id.EventID `json:"thread,omitempty"`         // the root of the thread the message is in
	ReplyTo       id.EventID `json:"reply_to,omitempty"`       // the message this one answers
}

func (p *printer) print(evt *event.Event) error {
	if p.seen[evt.ID] {
		return nil
	}
	p.seen[evt.ID] = true
	l := tailLine{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Type: evt.Type.Type, TS: evt.Timestamp,
		Encrypted: evt.Mautrix.WasEncrypted || evt.Type == event.EventEncrypted}
	if l.Encrypted && evt.Type != event.EventEncrypted {
		l.Trust = evt.Mautrix.TrustState.String()
	}
	if msg, ok := evt.Content.Parsed.(*event.MessageEventContent); ok {
		l.MsgType, l.Body = string(msg.MsgType), msg.Body
		if msg.Format == event.FormatHTML {
			l.FormattedBody = msg.FormattedBody
		}
		if rel := msg.RelatesTo; rel != nil {
			l.Thread, l.ReplyTo = rel.GetThreadParent(), rel.GetNonFallbackReplyTo()
		}
	}
	if evt.Type == event.EventEncrypted {
		l.Body = "[could not decrypt: this device has no key for it]"
	}
	if p.json {
		return json.NewEncoder(p.w).Encode(l)
	}
	var b strings.Builder
	b.WriteString(time.UnixMilli(l.TS).Format(time.RFC3339))
	if p.showRoom {
		b.WriteString(" " + string(l.RoomID))
	}
	b.WriteString(" " + string(l.Sender) + " ")
	b.WriteString(strings.NewReplacer("\r\n", "↵", "\n", "↵", "\r", "↵").Replace(l.Body))
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}
