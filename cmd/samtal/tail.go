package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// runTail prints the messages arriving in rooms until ctx ends.
func runTail(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tail")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per message: event_id, room_id, sender, type, msgtype, body, ts")
	setUsage(fs, "tail [flags] [ROOM...]", `Prints the messages arriving in each ROOM (a room ID or alias of a room the account is in;
none means every room) until interrupted, one line each: time, sender and body, with the
room after the time when there are several rooms. Line breaks in a body are shown as ↵.

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

	p := &printer{w: e.stdout, json: *asJSON, showRoom: len(ids) != 1}
	s := c.NewSyncer(matrix.SyncOptions{IncludeOwn: true})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error {
		if len(only) > 0 && !only[evt.RoomID] {
			return nil
		}
		return p.print(evt)
	})

	// Say on stderr when the first sync is through: what arrives from then on is printed.
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for s.Stats().Batches == 0 {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
		}
		what := "every room"
		if len(ids) > 0 {
			what = fmt.Sprintf("%d rooms", len(ids))
			if len(ids) == 1 {
				what = string(ids[0])
			}
		}
		fmt.Fprintf(e.stderr, "samtal tail: receiving messages in %s as %s\n", what, c.UserID())
	})
	return s.Run(runCtx)
}

// printer writes messages as lines of text or JSON. The Syncer calls it from one goroutine.
type printer struct {
	w        io.Writer
	json     bool
	showRoom bool
}

type tailLine struct {
	EventID id.EventID `json:"event_id"`
	RoomID  id.RoomID  `json:"room_id"`
	Sender  id.UserID  `json:"sender"`
	Type    string     `json:"type"`    // the event type: m.room.message
	MsgType string     `json:"msgtype"` // m.text, m.notice, m.file...
	Body    string     `json:"body"`
	TS      int64      `json:"ts"` // origin_server_ts, milliseconds since 1970
}

func (p *printer) print(evt *matrix.Event) error {
	l := tailLine{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Type: evt.Type.Type, Body: evt.Text(), TS: evt.Timestamp}
	if msg, ok := evt.Content.Parsed.(*event.MessageEventContent); ok {
		l.MsgType = string(msg.MsgType)
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
