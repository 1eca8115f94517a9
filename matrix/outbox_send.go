package matrix

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Send stores msg in the outbox and returns once it is durable, with no network I/O; a worker
// sends it. Items for one room are sent in the order they were stored, rooms in parallel. The
// item survives a crash of this process or an outage of the homeserver, and is sent once: its
// transaction ID makes a repeated request harmless, and after a crash the room is checked for
// the item before it is sent again.
//
// What depends on the homeserver is decided when the item is sent, on each attempt: whether
// the room is encrypted, and so the size limit. Content over that limit is shortened, and the
// full text is uploaded and sent right after it as a file. Into an end-to-end encrypted room
// it sends only when the client has encryption (UseEncryption); otherwise the item fails with
// ErrEncryptionRequired, which Send returns at once when the room is already known to be
// encrypted.
func (c *Client) Send(ctx context.Context, room id.RoomID, msg Message, opts SendOptions) (*Pending, error) {
	if err := c.checkSend(ctx, room, opts); err != nil {
		return nil, err
	}
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	items, err := messageItems(msg)
	if err != nil {
		return nil, err
	}
	return c.outbox.enqueue(ctx, room, items, opts.IdempotencyKey)
}

// SendFile queues the attachment, like Send: it is stored with the item and uploaded when the
// item is sent, encrypted in an end-to-end encrypted room (the key travels in the encrypted
// event). A file larger than the homeserver's upload limit fails with ErrTooLarge before
// anything is uploaded. A file that was uploaded in plaintext and whose room turned encrypted
// before the message went out is uploaded again, encrypted.
func (c *Client) SendFile(ctx context.Context, room id.RoomID, att Attachment, opts SendOptions) (*Pending, error) {
	if err := c.checkSend(ctx, room, opts); err != nil {
		return nil, err
	}
	if strings.TrimSpace(att.Name) == "" || strings.ContainsAny(att.Name, "/\\\x00") {
		return nil, fmt.Errorf("%w: attachment needs a plain file name, got %q", ErrInvalidContent, att.Name)
	}
	meta, err := json.Marshal(fileMeta{Name: att.Name, MimeType: att.MimeType, Kind: att.Kind, Width: att.Width, Height: att.Height, Thread: att.Thread})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidContent, err)
	}
	it := item{kind: kindFile, evtType: event.EventMessage.Type, content: meta, data: att.Data}
	it.hash = contentHash(kindFile, meta, att.Data)
	return c.outbox.enqueue(ctx, room, []item{it}, opts.IdempotencyKey)
}

// checkSend is what Send and SendFile check before they store: the room ID and key are well
// formed, the client is open, and the room is not known to need encryption this client lacks.
// It does no network I/O.
func (c *Client) checkSend(ctx context.Context, room id.RoomID, opts SendOptions) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	if err := validKey(opts.IdempotencyKey); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.outbox.ctx.Err() != nil {
		return ErrClosed
	}
	return c.checkCanSend(room)
}

// validKey checks an idempotency key: printable UTF-8 of at most 250 bytes. Keys with a
// control character are the outbox's own (the attachment of an oversized message).
func validKey(key string) error {
	if !utf8.ValidString(key) || len(key) > 250 || strings.ContainsFunc(key, unicode.IsControl) {
		return fmt.Errorf("%w: idempotency key must be printable UTF-8 of at most 250 bytes", ErrInvalidContent)
	}
	return nil
}

// item is one row to store.
type item struct {
	kind       string
	evtType    string
	content    json.RawMessage // the event content, or a fileMeta for files
	contentEnc json.RawMessage // the content for encrypted rooms, when it differs
	data       []byte          // a file's bytes
	hash       string          // what the idempotency key is bound to (first item only)
}

// fileMeta describes a file item: what the file message says once the data is uploaded.
type fileMeta struct {
	Name     string     `json:"name"`
	MimeType string     `json:"mime,omitempty"`
	Kind     MediaKind  `json:"kind,omitempty"`
	Width    int        `json:"w,omitempty"`
	Height   int        `json:"h,omitempty"`
	Thread   id.EventID `json:"thread,omitempty"` // Attachment.Thread, or the thread of the message whose full text this is
}

// messageItems prepares msg for both kinds of room without asking the server which one it is:
// as it is when it fits an encrypted event (and so any event); otherwise shortened for each
// limit, followed by its full text as a file, which an unencrypted room gets only when the
// message does not fit there either.
func messageItems(msg Message) ([]item, error) {
	content, err := json.Marshal(msg.Content)
	if err != nil {
		return nil, fmt.Errorf("%w: encode content: %w", ErrInvalidContent, err)
	}
	first := item{evtType: msg.Type.Type, content: content, hash: contentHash(msg.Type.Type, content, nil)}
	fittedEnc, overflow, mime, fitsEnc := FitWithin(msg, MaxEncryptedContentSize)
	if fitsEnc {
		return []item{first}, nil
	}
	if overflow == nil {
		return nil, fmt.Errorf("%w: content cannot be encoded", ErrInvalidContent)
	}
	fittedPlain, _, _, fitsPlain := FitWithin(msg, MaxContentSize)
	if fittedPlain.Type.Type != fittedEnc.Type.Type {
		// Content that cannot be shortened (it fits a plaintext event whole, but an
		// encrypted one only as a notice): one event type for both rooms, the notice.
		fittedPlain, fitsPlain = fittedEnc, false
	}
	first.evtType = fittedEnc.Type.Type
	if first.content, err = json.Marshal(fittedPlain.Content); err != nil {
		return nil, fmt.Errorf("%w: encode content: %w", ErrInvalidContent, err)
	}
	if first.contentEnc, err = json.Marshal(fittedEnc.Content); err != nil {
		return nil, fmt.Errorf("%w: encode content: %w", ErrInvalidContent, err)
	}
	meta := fileMeta{Name: overflowName(mime), MimeType: mime}
	if mc, ok := msg.Content.(*event.MessageEventContent); ok && mc.RelatesTo != nil && mc.RelatesTo.Type == event.RelThread {
		meta.Thread = mc.RelatesTo.EventID
	}
	metaJSON, _ := json.Marshal(meta)
	kind := kindOverflow
	if fitsPlain {
		kind = kindOverflowEnc
	}
	return []item{first, {kind: kind, evtType: event.EventMessage.Type, content: metaJSON, data: overflow}}, nil
}

func overflowName(mime string) string {
	switch {
	case strings.HasPrefix(mime, "text/html"):
		return "message.html"
	case strings.HasPrefix(mime, "application/json"):
		return "content.json"
	}
	return "message.txt"
}

// contentHash names what a send was: its kind, event type or file description, and content.
func contentHash(kind string, content []byte, data []byte) string {
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write(content)
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// enqueue stores the items in one transaction; the first carries the idempotency key.
func (o *outbox) enqueue(ctx context.Context, room id.RoomID, items []item, key string) (*Pending, error) {
	if o.ctx.Err() != nil {
		return nil, ErrClosed
	}
	var first int64
	var dup bool
	encrypting := 0
	if o.c.Encrypting() {
		encrypting = 1
	}
	err := o.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for i, it := range items {
			var k any
			if key != "" {
				if i == 0 {
					k = key
				} else {
					k = key + "\x1f" + strconv.Itoa(i) // a control character: no caller's key has it
				}
			}
			var rowID int64
			err := o.c.q.QueryRow(ctx, `INSERT INTO samtal_outbox (session, room_id, kind, event_type, content, content_enc, data,
					idempotency_key, content_hash, user_id, encrypting, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (session, idempotency_key) DO NOTHING RETURNING id`,
				o.c.name, room, it.kind, it.evtType, string(it.content), string(it.contentEnc), it.data,
				k, it.hash, o.c.UserID(), encrypting, time.Now().UnixMilli()).Scan(&rowID)
			if errors.Is(err, sql.ErrNoRows) && i == 0 {
				// The key was used before, maybe by a Send racing this one.
				dup = true
				first, err = o.sameSend(ctx, key, room, it.hash)
				return err
			}
			if err != nil {
				return err
			}
			if i == 0 {
				first = rowID
			}
		}
		return nil
	})
	if errors.Is(err, ErrIdempotencyConflict) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("matrix: outbox: store send to %s: %w", room, err)
	}
	o.wakeAfter(ctx, room)
	return &Pending{ID: first, Duplicate: dup, ob: o}, nil
}

// InTransaction runs fn in one transaction of the client's database. Sends made with fn's
// context (Send, SendFile) are stored in that transaction, and what fn writes through its
// context to the same database (the Database, or a Child of it) commits with them, or none of
// it does: a program that records what it sent (the mail gateway: the mail's thread and its
// delivery state) needs one commit for both, and never has one without the other after a
// crash. The sends go out once the transaction has committed. When InTransaction returns an
// error, nothing fn stored is there; the Pending values Send returned in it are void.
//
// fn must do no network I/O and take no longer than it must: on SQLite the transaction holds
// the database's write lock. Send and SendFile do no network I/O.
func (c *Client) InTransaction(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(wakesKey{}).(*laterWakes); ok {
		return fn(ctx) // already in one
	}
	w := &laterWakes{db: c.db, rooms: map[id.RoomID]bool{}}
	err := c.db.DoTxn(context.WithValue(ctx, wakesKey{}, w), nil, fn)
	if c.outbox != nil {
		// Also after a rollback: nothing new is there then, and a lane finds that out.
		for room := range w.taken() {
			c.outbox.wake(room, false)
		}
	}
	return err
}

// wakeAfter starts room's lane, or, for what was stored in InTransaction's transaction, has
// InTransaction start it once that has ended: a lane started before the commit would not see
// the item.
func (o *outbox) wakeAfter(ctx context.Context, room id.RoomID) {
	if w, ok := ctx.Value(wakesKey{}).(*laterWakes); ok && w.db == o.db {
		w.add(room)
		return
	}
	o.wake(room, false)
}

// wakesKey is the context key of an InTransaction's rooms to wake.
type wakesKey struct{}

// laterWakes are the rooms InTransaction wakes the lanes of once its transaction ends.
type laterWakes struct {
	db    *dbutil.Database
	mu    sync.Mutex
	rooms map[id.RoomID]bool
}

func (w *laterWakes) add(room id.RoomID) {
	w.mu.Lock()
	w.rooms[room] = true
	w.mu.Unlock()
}

func (w *laterWakes) taken() map[id.RoomID]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rooms
}

// sameSend returns the item that first used key, if it was the same send: the same room and
// content. Items from before content hashes were stored match on the room alone.
func (o *outbox) sameSend(ctx context.Context, key string, room id.RoomID, hash string) (int64, error) {
	var rowID int64
	var prevRoom id.RoomID
	var prevHash string
	err := o.c.q.QueryRow(ctx, `SELECT id, room_id, content_hash FROM samtal_outbox WHERE session = $1 AND idempotency_key = $2`,
		o.c.name, key).Scan(&rowID, &prevRoom, &prevHash)
	if err != nil {
		return 0, err
	}
	if prevRoom != room {
		return 0, fmt.Errorf("%w: key %q was used for item %d in another room", ErrIdempotencyConflict, key, rowID)
	}
	if prevHash != "" && prevHash != hash {
		return 0, fmt.Errorf("%w: key %q was used for item %d with other content", ErrIdempotencyConflict, key, rowID)
	}
	return rowID, nil
}
