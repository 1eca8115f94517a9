package mailbridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// Threads. A conversation by mail is one Matrix thread in each room it reaches: the first mail
// of the conversation to arrive is posted as an ordinary message, and every later one that
// names it (or any mail of the conversation) in In-Reply-To or References is posted in the
// thread that message starts (m.thread). What each mail became in each room is kept in
// samtal_mail_thread (Message-ID to room, event, thread root), which the outbound gateway uses
// to answer by mail, and the Message-IDs each mail names in samtal_mail_reference.
//
// Out of order: a reply that arrives before the mail it answers starts the thread itself,
// since nothing it names is known yet; the mail it answers, arriving later, is found as named
// by the reply and joins that thread. So a conversation stays one thread whatever the order,
// rooted at the first of its mails to arrive. The thread root must be sent before a reply can
// refer to it: a reply whose root is still in the outbox waits up to threadRootWait, and is
// then retried later like any delivery; after threadFallbackAttempts such tries, or when the
// root's post failed for good, the reply is posted on its own and starts a thread of its own.

const (
	maxReferences          = 50              // Message-IDs of one mail looked at
	threadRootWait         = 3 * time.Second // how long a reply waits for its root's event ID
	threadFallbackAttempts = 8               // tries before a reply gives up waiting for its root
)

// errThreadRootPending: the thread root of a reply is not sent yet; the delivery is retried.
var errThreadRootPending = errors.New("mailbridge: the conversation's first mail is not posted yet")

var msgIDRe = regexp.MustCompile(`<([^<>\s]{1,250})>`)

// messageIDs returns the Message-IDs in a header value (In-Reply-To, References), without
// angle brackets, read leniently: whatever is in angle brackets.
func messageIDs(v string) []string {
	var out []string
	for _, m := range msgIDRe.FindAllStringSubmatch(v, -1) {
		if s := clean(m[1], false); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// threadRefs returns the Message-IDs m names, the most specific first: In-Reply-To, then
// References from the last (the parent) to the first (the conversation's start), each once,
// without m's own.
func (m *Mail) threadRefs() []string {
	seen := map[string]bool{m.MessageID: true, "": true}
	var out []string
	add := func(s string) {
		if !seen[s] && len(out) < maxReferences {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range m.InReplyTo {
		add(s)
	}
	for i := len(m.References) - 1; i >= 0; i-- {
		add(m.References[i])
	}
	return out
}

// threadPlace is where a mail goes in a room.
type threadPlace struct {
	rootMessageID string     // the Message-ID of the thread's root; the mail's own for a root
	root          id.EventID // the root's event; "" when the mail is posted as a root
	latest        id.EventID // the event it answers, for clients without threads; "" for a root
}

// place decides where m goes in room: into the thread of a conversation it belongs to, or as
// the root of a new one. attempts is how often its delivery failed before.
func (g *Gateway) place(ctx context.Context, room id.RoomID, m *Mail, attempts int) (threadPlace, error) {
	q := g.spool.q
	self := threadPlace{rootMessageID: m.MessageID}
	refs := m.threadRefs()
	rootMsg := ""
	if m.MessageID != "" {
		// Posted before (a retry, or the same mail again): the same place as then, so that the
		// content, and so the idempotency key's binding, is the same.
		err := q.QueryRow(ctx, `SELECT root_message_id FROM samtal_mail_thread WHERE room_id = $1 AND message_id = $2`,
			room, m.MessageID).Scan(&rootMsg)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return threadPlace{}, fmt.Errorf("mailbridge: read threads: %w", err)
		}
	}
	if rootMsg == "" {
		for _, ref := range refs {
			err := q.QueryRow(ctx, `SELECT root_message_id FROM samtal_mail_thread WHERE room_id = $1 AND message_id = $2`,
				room, ref).Scan(&rootMsg)
			if err == nil {
				break
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return threadPlace{}, fmt.Errorf("mailbridge: read threads: %w", err)
			}
		}
	}
	if rootMsg == "" {
		// A mail that arrived earlier names this one, or names what this one names.
		names := append([]string{m.MessageID}, refs...)
		for _, ref := range names {
			if ref == "" {
				continue
			}
			err := q.QueryRow(ctx, `SELECT t.root_message_id FROM samtal_mail_reference r
				JOIN samtal_mail_thread t ON t.room_id = r.room_id AND t.message_id = r.message_id
				WHERE r.room_id = $1 AND r.ref = $2 ORDER BY t.created_at LIMIT 1`, room, ref).Scan(&rootMsg)
			if err == nil {
				break
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return threadPlace{}, fmt.Errorf("mailbridge: read threads: %w", err)
			}
		}
	}
	if rootMsg == "" || rootMsg == m.MessageID {
		return self, nil
	}
	root, err := g.threadEvent(ctx, room, rootMsg, true)
	switch {
	case errors.Is(err, errRootFailed):
		return self, nil
	case err != nil && attempts+1 >= threadFallbackAttempts:
		g.log.Warn("mail posted outside its thread: the thread's first mail is still not posted", "room", room, "err", err)
		return self, nil
	case err != nil:
		return threadPlace{}, err
	}
	// The fallback reply (for clients without threads) points at the root rather than the
	// parent: the parent's event may be unknown now and known on a retry, and the content
	// must stay the same for the idempotency key.
	return threadPlace{rootMessageID: rootMsg, root: root, latest: root}, nil
}

// errRootFailed: the thread root's post failed for good.
var errRootFailed = errors.New("mailbridge: the conversation's first mail could not be posted")

// threadEvent returns the event the mail messageID became in room, waiting up to
// threadRootWait for it when wait is set. It fails with errThreadRootPending while the post is
// not sent and errRootFailed when it failed for good.
func (g *Gateway) threadEvent(ctx context.Context, room id.RoomID, messageID string, wait bool) (id.EventID, error) {
	q := g.spool.q
	var outboxID int64
	var evt id.EventID
	err := q.QueryRow(ctx, `SELECT outbox_id, event_id FROM samtal_mail_thread WHERE room_id = $1 AND message_id = $2`,
		room, messageID).Scan(&outboxID, &evt)
	if err != nil {
		return "", fmt.Errorf("mailbridge: read threads: %w", err)
	}
	if evt != "" {
		return evt, nil
	}
	if outboxID == 0 {
		return "", errThreadRootPending
	}
	p := g.client.PendingItem(outboxID)
	evt, ok, err := p.Sent(ctx)
	if !ok && err == nil && wait {
		wctx, cancel := context.WithTimeout(ctx, threadRootWait)
		evt, err = p.Wait(wctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return "", errThreadRootPending
		}
		ok = true
	}
	var se *matrix.SendError
	switch {
	case !ok:
		return "", errThreadRootPending
	case errors.As(err, &se):
		return "", errRootFailed
	case err != nil:
		return "", err
	}
	if _, err := q.Exec(ctx, `UPDATE samtal_mail_thread SET event_id = $1 WHERE room_id = $2 AND message_id = $3`,
		evt, room, messageID); err != nil {
		return "", fmt.Errorf("mailbridge: record thread event: %w", err)
	}
	return evt, nil
}

// remember records, before the mail is posted, where it goes in room and what it names, so
// that a retry finds the same place and later mails find the conversation.
func (g *Gateway) remember(ctx context.Context, room id.RoomID, m *Mail, spoolID int64, p threadPlace) error {
	if m.MessageID == "" {
		return nil // nothing can refer to it
	}
	db, q := g.spool.db, g.spool.q
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res, err := q.Exec(ctx, `INSERT INTO samtal_mail_thread (room_id, message_id, root_message_id, spool_id, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, message_id) DO NOTHING`,
			room, m.MessageID, p.rootMessageID, spoolID, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("mailbridge: record thread: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Known already; a reply that gave up waiting for its root becomes a root.
			if _, err := q.Exec(ctx, `UPDATE samtal_mail_thread SET root_message_id = $1 WHERE room_id = $2 AND message_id = $3`,
				p.rootMessageID, room, m.MessageID); err != nil {
				return fmt.Errorf("mailbridge: record thread: %w", err)
			}
		}
		for _, ref := range m.threadRefs() {
			if _, err := q.Exec(ctx, `INSERT INTO samtal_mail_reference (room_id, message_id, ref) VALUES ($1, $2, $3)
				ON CONFLICT (room_id, message_id, ref) DO NOTHING`, room, m.MessageID, ref); err != nil {
				return fmt.Errorf("mailbridge: record references: %w", err)
			}
		}
		return nil
	})
}

// posted records the outbox item the mail's post is, once it is stored there.
func (g *Gateway) posted(ctx context.Context, room id.RoomID, m *Mail, outboxID int64) error {
	if m.MessageID == "" {
		return nil
	}
	_, err := g.spool.q.Exec(ctx, `UPDATE samtal_mail_thread SET outbox_id = $1 WHERE room_id = $2 AND message_id = $3 AND outbox_id = 0`,
		outboxID, room, m.MessageID)
	if err != nil {
		return fmt.Errorf("mailbridge: record post: %w", err)
	}
	return nil
}

// postedBefore returns the outbox item of the earlier post of m into room, or 0 when it is not
// recorded.
func (g *Gateway) postedBefore(ctx context.Context, room id.RoomID, m *Mail) int64 {
	var outboxID int64
	if m.MessageID != "" {
		_ = g.spool.q.QueryRow(ctx, `SELECT outbox_id FROM samtal_mail_thread WHERE room_id = $1 AND message_id = $2`,
			room, m.MessageID).Scan(&outboxID)
	}
	return outboxID
}

// ThreadEntry is what one mail became in one room: the mapping the outbound gateway answers
// from.
type ThreadEntry struct {
	MessageID     string     // the mail's Message-ID, without angle brackets
	Room          id.RoomID  // where it was posted
	Event         id.EventID // its event; "" until the outbox has sent it
	RootMessageID string     // the Message-ID of the mail that starts its thread (its own for a root)
	Root          id.EventID // the thread's root event; "" until known
}

// ErrNoThread is returned by Thread for a mail the gateway has not posted into the room.
var ErrNoThread = errors.New("mailbridge: no such mail in the room")

// Thread returns what the mail with Message-ID messageID became in room: its event and the
// thread it is in. Event IDs not recorded yet are looked up in the outbox (without waiting).
func (g *Gateway) Thread(ctx context.Context, room id.RoomID, messageID string) (ThreadEntry, error) {
	messageID = strings.Trim(strings.TrimSpace(messageID), "<>")
	e := ThreadEntry{MessageID: messageID, Room: room}
	err := g.spool.q.QueryRow(ctx, `SELECT root_message_id FROM samtal_mail_thread WHERE room_id = $1 AND message_id = $2`,
		room, messageID).Scan(&e.RootMessageID)
	if errors.Is(err, sql.ErrNoRows) {
		return ThreadEntry{}, fmt.Errorf("%w: %s", ErrNoThread, room)
	}
	if err != nil {
		return ThreadEntry{}, fmt.Errorf("mailbridge: read threads: %w", err)
	}
	if evt, err := g.threadEvent(ctx, room, messageID, false); err == nil {
		e.Event = evt
	}
	if e.RootMessageID == messageID {
		e.Root = e.Event
	} else if evt, err := g.threadEvent(ctx, room, e.RootMessageID, false); err == nil {
		e.Root = evt
	}
	return e, nil
}
