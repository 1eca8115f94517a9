package matrix

import (
	"context"
	"crypto/rand"
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

	"github.com/samtalhq/samtal/internal/backoff"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// OutboxOptions configure how sends are queued and retried. The zero value is a good default.
type OutboxOptions struct {
	MaxParallelRooms int           // rooms sent to at the same time; 0 means 16
	MinRetryDelay    time.Duration // first wait after a temporary failure; 0 means 250 ms
	MaxRetryDelay    time.Duration // longest wait between tries (rate limits excepted); 0 means 15 s
	MaxAttempts      int           // tries before a temporary failure becomes final; 0 means no limit
	OnOutcome        func(Outcome) // called once per item when it is sent or fails for good; must not block
	// ResumeDelay is how long a lane waits, after a restart or a send with no answer, before
	// it looks in the room for items whose fate is unknown. A homeserver may still be working
	// on a request whose client died, and only shows the event once it is done; checking
	// earlier would miss it and send it twice. 0 means 3 s.
	ResumeDelay time.Duration
}

// SendOptions are per-send settings.
type SendOptions struct {
	// IdempotencyKey names the logical send, such as "case-4711/update-3". A second Send with a
	// key this session has used returns the first one's Pending and sends nothing.
	IdempotencyKey string
}

// Outcome is what became of a queued send.
type Outcome struct {
	ID             int64
	Room           id.RoomID
	IdempotencyKey string
	EventID        id.EventID // set when sent
	Err            error      // set when it failed for good; a *SendError
}

// SendError is a send that failed for good.
type SendError struct {
	ID   int64
	Room id.RoomID
	Err  error // the homeserver's *HTTPError in the process that tried; its text after a restart
}

func (e *SendError) Error() string {
	return fmt.Sprintf("matrix: send %d to %s failed: %v", e.ID, e.Room, e.Err)
}

// Unwrap returns the cause.
func (e *SendError) Unwrap() error { return e.Err }

// Pending is a send stored in the outbox.
type Pending struct {
	ID int64 // the outbox row; with the outbox instance, it makes the Matrix transaction ID
	// Duplicate is true when an earlier Send with the same idempotency key stored it.
	Duplicate bool
	ob        *outbox
}

// Wait returns the event ID once the item is sent, or its *SendError if it failed for good.
func (p *Pending) Wait(ctx context.Context) (id.EventID, error) {
	return p.ob.wait(ctx, p.ID)
}

// Row states.
const (
	statePending = 0
	stateSent    = 1
	stateFailed  = 2
)

// txnContentKey carries the transaction ID inside the content, so that after a crash the
// outbox can recognise its own events in the room even where the server has forgotten the
// transaction (restarted) or does not echo unsigned.transaction_id.
const txnContentKey = "io.samtal.txn_id"

// Send stores msg in the outbox and returns; a worker sends it. Items for one room are sent in
// the order they were stored, rooms in parallel. The item survives a crash of this process or
// an outage of the homeserver, and is sent once: its transaction ID makes a repeated request
// harmless, and after a crash the room is checked for the item before it is sent again.
//
// Content over the event size limit is shortened, and the full text is uploaded and sent right
// after it as a file. Into an end-to-end encrypted room it sends only when the client has
// encryption (UseEncryption); otherwise it returns ErrEncryptionRequired.
func (c *Client) Send(ctx context.Context, room id.RoomID, msg Message, opts SendOptions) (*Pending, error) {
	if err := ValidateRoomID(room); err != nil {
		return nil, err
	}
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	if err := validKey(opts.IdempotencyKey); err != nil {
		return nil, err
	}
	if opts.IdempotencyKey != "" {
		if p, err := c.outbox.byKey(ctx, opts.IdempotencyKey); p != nil || err != nil {
			return p, err
		}
	}
	encrypted, err := c.checkCanSend(ctx, room)
	if err != nil {
		return nil, err
	}
	limit := MaxContentSize
	if encrypted {
		limit = MaxEncryptedContentSize
	}
	fitted, overflow, mime, fits := FitWithin(msg, limit)
	items := []Message{fitted}
	if !fits {
		if overflow == nil {
			return nil, fmt.Errorf("%w: content cannot be encoded", ErrInvalidContent)
		}
		file, err := c.attachOverflow(ctx, msg, overflow, mime, encrypted)
		if err != nil {
			return nil, err
		}
		items = append(items, file)
	}
	return c.outbox.enqueue(ctx, room, items, opts.IdempotencyKey)
}

// attachOverflow uploads the full text of a message that was too large and returns the file
// message that goes after its shortened version, in the same thread.
func (c *Client) attachOverflow(ctx context.Context, orig Message, data []byte, mime string, encrypt bool) (Message, error) {
	name := "message.txt"
	if strings.HasPrefix(mime, "text/html") {
		name = "message.html"
	} else if strings.HasPrefix(mime, "application/json") {
		name = "content.json"
	}
	file, err := c.upload(ctx, Attachment{Name: name, MimeType: mime, Data: data}, encrypt)
	if err != nil {
		return Message{}, fmt.Errorf("matrix: attach full text of an oversized message: %w", err)
	}
	if mc, ok := orig.Content.(*event.MessageEventContent); ok && mc.RelatesTo != nil && mc.RelatesTo.Type == event.RelThread {
		file = InThread(mc.RelatesTo.EventID, "", file)
	}
	return file, nil
}

// validKey checks an idempotency key: printable UTF-8 of at most 250 bytes. Keys with a
// control character are the outbox's own (the attachment of an oversized message).
func validKey(key string) error {
	if !utf8.ValidString(key) || len(key) > 250 || strings.ContainsFunc(key, unicode.IsControl) {
		return fmt.Errorf("%w: idempotency key must be printable UTF-8 of at most 250 bytes", ErrInvalidContent)
	}
	return nil
}

// outbox is the durable send queue of one client.
type outbox struct {
	c        *Client
	db       *dbutil.Database
	opts     OutboxOptions
	instance string
	sem      chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	lanes     map[id.RoomID]chan struct{} // a running lane per room, and its wake-up signal
	waiters   map[int64][]chan result
	results   map[int64]result // sent, not yet committed as sent
	marks     chan mark
	committed chan struct{} // closed when commitMarks has written the last mark
}

type result struct {
	eventID id.EventID
	err     error
}

type mark struct {
	id      int64
	eventID id.EventID
}

type row struct {
	id        int64
	room      id.RoomID
	evtType   string
	content   json.RawMessage
	key       string
	createdAt time.Time
}

func newOutbox(ctx context.Context, c *Client, opts OutboxOptions) (*outbox, error) {
	if opts.MaxParallelRooms <= 0 {
		opts.MaxParallelRooms = 16
	}
	if opts.MinRetryDelay <= 0 {
		opts.MinRetryDelay = 250 * time.Millisecond
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 15 * time.Second
	}
	if opts.ResumeDelay <= 0 {
		opts.ResumeDelay = 3 * time.Second
	}
	o := &outbox{
		c: c, db: c.db, opts: opts,
		sem:       make(chan struct{}, opts.MaxParallelRooms),
		lanes:     map[id.RoomID]chan struct{}{},
		waiters:   map[int64][]chan result{},
		results:   map[int64]result{},
		marks:     make(chan mark, 1024),
		committed: make(chan struct{}),
	}
	var err error
	if o.instance, err = o.loadInstance(ctx); err != nil {
		return nil, err
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	go o.commitMarks()
	// Resume what a previous run left. Each lane first checks the room for items that were
	// sent but not yet recorded as sent when that run ended.
	rows, err := o.db.Query(ctx, `SELECT DISTINCT room_id FROM samtal_outbox WHERE session = $1 AND state = $2`, c.name, statePending)
	if err != nil {
		o.close()
		return nil, fmt.Errorf("matrix: outbox: find pending sends: %w", err)
	}
	var rooms []id.RoomID
	for rows.Next() {
		var r id.RoomID
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			o.close()
			return nil, err
		}
		rooms = append(rooms, r)
	}
	rows.Close()
	for _, r := range rooms {
		o.wake(r, true)
	}
	if len(rooms) > 0 {
		c.log.Info("outbox: resuming pending sends", "rooms", len(rooms))
	}
	return o, nil
}

func (o *outbox) loadInstance(ctx context.Context) (string, error) {
	var inst string
	err := o.db.QueryRow(ctx, `SELECT instance FROM samtal_outbox_instance WHERE singleton = 1`).Scan(&inst)
	if err == nil {
		return inst, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("matrix: outbox: %w", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	if _, err := o.db.Exec(ctx, `INSERT INTO samtal_outbox_instance (singleton, instance) VALUES (1, $1) ON CONFLICT DO NOTHING`, hex.EncodeToString(b)); err != nil {
		return "", fmt.Errorf("matrix: outbox: %w", err)
	}
	return o.loadInstance(ctx)
}

func (o *outbox) txnID(rowID int64) string {
	return "samtal." + o.instance + "." + strconv.FormatInt(rowID, 10)
}

func (o *outbox) byKey(ctx context.Context, key string) (*Pending, error) {
	var rowID int64
	err := o.db.QueryRow(ctx, `SELECT id FROM samtal_outbox WHERE session = $1 AND idempotency_key = $2`, o.c.name, key).Scan(&rowID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("matrix: outbox: look up idempotency key: %w", err)
	}
	return &Pending{ID: rowID, Duplicate: true, ob: o}, nil
}

// enqueue stores the items in one transaction; the first carries the idempotency key.
func (o *outbox) enqueue(ctx context.Context, room id.RoomID, items []Message, key string) (*Pending, error) {
	if o.ctx.Err() != nil {
		return nil, ErrClosed
	}
	var first int64
	var dup bool
	err := o.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for i, m := range items {
			content, err := json.Marshal(m.Content)
			if err != nil {
				return fmt.Errorf("%w: encode content: %w", ErrInvalidContent, err)
			}
			var k any
			if key != "" {
				if i == 0 {
					k = key
				} else {
					k = key + "\x1f" + strconv.Itoa(i) // a control character: no caller's key has it
				}
			}
			var rowID int64
			err = o.db.QueryRow(ctx, `INSERT INTO samtal_outbox (session, room_id, event_type, content, idempotency_key, created_at)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session, idempotency_key) DO NOTHING RETURNING id`,
				o.c.name, room, m.Type.Type, string(content), k, time.Now().UnixMilli()).Scan(&rowID)
			if errors.Is(err, sql.ErrNoRows) && i == 0 {
				// Another Send with the same key won the race.
				dup = true
				return o.db.QueryRow(ctx, `SELECT id FROM samtal_outbox WHERE session = $1 AND idempotency_key = $2`, o.c.name, key).Scan(&first)
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
	if err != nil {
		return nil, fmt.Errorf("matrix: outbox: store send to %s: %w", room, err)
	}
	if !dup {
		o.wake(room, false)
	}
	return &Pending{ID: first, Duplicate: dup, ob: o}, nil
}

// wake makes sure a lane is sending for room.
func (o *outbox) wake(room id.RoomID, recover bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if kick, ok := o.lanes[room]; ok {
		select {
		case kick <- struct{}{}:
		default:
		}
		return
	}
	if o.ctx.Err() != nil {
		return
	}
	kick := make(chan struct{}, 1)
	o.lanes[room] = kick
	o.wg.Add(1)
	go o.runLane(room, kick, recover)
}

// runLane sends a room's pending items in order until there are none.
func (o *outbox) runLane(room id.RoomID, kick chan struct{}, recover bool) {
	defer o.wg.Done()
	var after int64
	for {
		rows, err := o.pending(room, after)
		if err != nil {
			if o.ctx.Err() != nil {
				return // closing
			}
			o.c.log.Error("outbox: read pending sends", "room", room, "err", err)
			if !o.sleep(time.Second) {
				return
			}
			continue
		}
		if recover && len(rows) > 0 {
			if !o.sleep(o.opts.ResumeDelay) {
				return
			}
			var ok bool
			if rows, ok = o.reconcile(room, rows); !ok {
				return // closing
			}
			recover = false
		}
		if len(rows) == 0 {
			o.mu.Lock()
			select {
			case <-kick: // something arrived since our query
				o.mu.Unlock()
				continue
			default:
			}
			delete(o.lanes, room)
			o.mu.Unlock()
			return
		}
		for _, r := range rows {
			if !o.deliver(r) {
				return // closing
			}
			after = r.id
		}
	}
}

func (o *outbox) pending(room id.RoomID, after int64) ([]row, error) {
	// Items sent whose marks are not written yet, taken before the query: an item whose mark
	// is written after this moment is still in this set, and one written before is "sent" in
	// what the query reads.
	o.mu.Lock()
	inflight := make(map[int64]bool, len(o.results))
	for id := range o.results {
		inflight[id] = true
	}
	o.mu.Unlock()
	rows, err := o.db.Query(o.ctx, `SELECT id, event_type, content, COALESCE(idempotency_key, ''), created_at FROM samtal_outbox
		WHERE session = $1 AND room_id = $2 AND state = $3 AND id > $4 ORDER BY id LIMIT 256`,
		o.c.name, room, statePending, after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		r := row{room: room}
		var content string
		var created int64
		if err := rows.Scan(&r.id, &r.evtType, &content, &r.key, &created); err != nil {
			return nil, err
		}
		r.content = json.RawMessage(content)
		r.createdAt = time.UnixMilli(created)
		if inflight[r.id] {
			continue // sent; its mark is on the way to the database
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// deliver sends one item, retrying temporary failures, and records the outcome. It returns
// false when the outbox is closing.
func (o *outbox) deliver(r row) bool {
	txn := o.txnID(r.id)
	content := withTxnKey(r.content, txn)
	unknown := false // whether an earlier try may have reached the server
	for attempt := 1; ; attempt++ {
		if unknown {
			if found, err := o.findSent(r.room, []row{r}); err == nil && found[r.id] != "" {
				o.succeed(r, found[r.id])
				return true
			}
		}
		select {
		case o.sem <- struct{}{}:
		case <-o.ctx.Done():
			return false
		}
		resp, err := o.sendOnce(r, content, txn)
		<-o.sem
		if err == nil {
			o.succeed(r, resp.EventID)
			return true
		}
		if o.ctx.Err() != nil {
			return false
		}
		err = wrapErr(err)
		if !retryable(err) || (o.opts.MaxAttempts > 0 && attempt >= o.opts.MaxAttempts) {
			o.fail(r, err)
			return true
		}
		var he *HTTPError
		// A rate limit or an error status is a clear refusal, and so is a send that waits for
		// encryption; anything else (no answer, a broken connection) may have been accepted,
		// so check the room before trying again.
		unknown = unknown || !(errors.As(err, &he) || errors.Is(err, ErrEncryptionRequired))
		delay := o.backoff(attempt, err)
		if unknown {
			delay = max(delay, o.opts.ResumeDelay)
		}
		o.c.log.Warn("outbox: send failed, retrying", "room", r.room, "id", r.id, "attempt", attempt, "retry_in", delay, "err", err)
		if !o.sleep(delay) {
			return false
		}
	}
}

// sendOnce makes one attempt. In an encrypted room the content is encrypted here, on each
// attempt: a retry may carry other ciphertext, but its transaction ID makes the server keep
// the first event.
func (o *outbox) sendOnce(r row, content json.RawMessage, txn string) (*mautrix.RespSendEvent, error) {
	typ := event.Type{Type: r.evtType, Class: event.MessageEventType}
	var body any = content
	encrypted, err := o.c.RoomEncrypted(o.ctx, r.room)
	if err != nil {
		return nil, err
	}
	if encrypted {
		// Checked on every attempt, not only at Send: items resumed after a restart may go
		// out before e2ee.Enable has run, and must then wait for it.
		enc := o.c.encryption()
		if enc == nil {
			return nil, fmt.Errorf("%w: %s", ErrEncryptionRequired, r.room)
		}
		if plaintextMedia(content) {
			// Uploaded unencrypted while the room was not encrypted yet: the file is not
			// referenced from an encrypted room, which would make it look protected.
			return nil, fmt.Errorf("%w: the file was uploaded unencrypted before %s turned encrypted; send it again", ErrInvalidContent, r.room)
		}
		ciphertext, err := enc.Encrypt(o.ctx, r.room, typ, content)
		if err != nil {
			return nil, fmt.Errorf("matrix: encrypt for %s: %w", r.room, err)
		}
		typ, body = event.EventEncrypted, ciphertext
	}
	return o.c.send.SendMessageEvent(o.ctx, r.room, typ, body, mautrix.ReqSendEvent{TransactionID: txn, DontEncrypt: true})
}

// plaintextMedia reports whether content is a media message that points at an unencrypted
// upload (url rather than file).
func plaintextMedia(content json.RawMessage) bool {
	var m struct {
		MsgType event.MessageType `json:"msgtype"`
		URL     string            `json:"url"`
	}
	if json.Unmarshal(content, &m) != nil || m.URL == "" {
		return false
	}
	switch m.MsgType {
	case event.MsgFile, event.MsgImage, event.MsgVideo, event.MsgAudio:
		return true
	}
	return false
}

func (o *outbox) backoff(attempt int, err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter > 0 {
		return backoff.Server(he.RetryAfter)
	}
	return backoff.Delay(attempt, o.opts.MinRetryDelay, o.opts.MaxRetryDelay)
}

func (o *outbox) sleep(d time.Duration) bool { return backoff.Sleep(o.ctx, d) }

func (o *outbox) succeed(r row, evt id.EventID) {
	o.mu.Lock()
	o.results[r.id] = result{eventID: evt}
	ws := o.waiters[r.id]
	delete(o.waiters, r.id)
	o.mu.Unlock()
	for _, w := range ws {
		w <- result{eventID: evt}
	}
	o.marks <- mark{id: r.id, eventID: evt}
	if o.opts.OnOutcome != nil {
		o.opts.OnOutcome(Outcome{ID: r.id, Room: r.room, IdempotencyKey: r.key, EventID: evt})
	}
}

func (o *outbox) fail(r row, cause error) {
	o.c.log.Error("outbox: send failed for good", "room", r.room, "id", r.id, "err", cause)
	_, err := o.db.Exec(context.Background(), `UPDATE samtal_outbox SET state = $1, error = $2 WHERE id = $3`, stateFailed, cause.Error(), r.id)
	if err != nil {
		o.c.log.Error("outbox: record failure", "id", r.id, "err", err)
	}
	serr := &SendError{ID: r.id, Room: r.room, Err: cause}
	o.mu.Lock()
	ws := o.waiters[r.id]
	delete(o.waiters, r.id)
	o.mu.Unlock()
	for _, w := range ws {
		w <- result{err: serr}
	}
	if o.opts.OnOutcome != nil {
		o.opts.OnOutcome(Outcome{ID: r.id, Room: r.room, IdempotencyKey: r.key, Err: serr})
	}
}

// commitMarks records sent items in batches: a send is acknowledged to waiters at once, and
// written as sent with the next batch. An item whose mark is lost in a crash is found in the
// room by reconcile on the next start, not sent twice. It returns when marks is closed.
func (o *outbox) commitMarks() {
	defer close(o.committed)
	for m := range o.marks {
		batch := []mark{m}
	drain:
		for len(batch) < 512 {
			select {
			case m, ok := <-o.marks:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		o.writeMarks(batch)
	}
}

func (o *outbox) writeMarks(batch []mark) {
	if len(batch) == 0 {
		return
	}
	now := time.Now().UnixMilli()
	for attempt := 1; ; attempt++ {
		err := o.db.DoTxn(context.Background(), nil, func(ctx context.Context) error {
			for _, m := range batch {
				if _, err := o.db.Exec(ctx, `UPDATE samtal_outbox SET state = $1, event_id = $2, sent_at = $3 WHERE id = $4`,
					stateSent, m.eventID, now, m.id); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		// Until the marks are written the results stay in memory, where Wait and the lanes
		// find them; a crash meanwhile leaves the items to reconcile on the next start.
		o.c.log.Error("outbox: cannot record sent items; retrying", "count", len(batch), "attempt", attempt, "err", err)
		if attempt >= 10 {
			return
		}
		time.Sleep(backoff.Delay(attempt, 100*time.Millisecond, 5*time.Second))
	}
	o.mu.Lock()
	for _, m := range batch {
		delete(o.results, m.id)
	}
	o.mu.Unlock()
}

func (o *outbox) wait(ctx context.Context, rowID int64) (id.EventID, error) {
	o.mu.Lock()
	if r, ok := o.results[rowID]; ok {
		o.mu.Unlock()
		return r.eventID, r.err
	}
	ch := make(chan result, 1)
	o.waiters[rowID] = append(o.waiters[rowID], ch)
	o.mu.Unlock()
	defer o.dropWaiter(rowID, ch)

	var state int
	var evt, errText string
	var room id.RoomID
	err := o.db.QueryRow(ctx, `SELECT state, event_id, error, room_id FROM samtal_outbox WHERE id = $1 AND session = $2`, rowID, o.c.name).
		Scan(&state, &evt, &errText, &room)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("matrix: outbox has no item %d", rowID)
	}
	if err != nil {
		return "", fmt.Errorf("matrix: outbox: %w", err)
	}
	switch state {
	case stateSent:
		return id.EventID(evt), nil
	case stateFailed:
		return "", &SendError{ID: rowID, Room: room, Err: errors.New(errText)}
	}
	select {
	case r := <-ch:
		return r.eventID, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	case <-o.ctx.Done():
		return "", ErrClosed
	}
}

func (o *outbox) dropWaiter(rowID int64, ch chan result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ws := o.waiters[rowID]
	for i, w := range ws {
		if w == ch {
			o.waiters[rowID] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(o.waiters[rowID]) == 0 {
		delete(o.waiters, rowID)
	}
}

// close stops the lanes, then records what they sent.
func (o *outbox) close() {
	o.mu.Lock()
	o.cancel() // under mu, so that wake never starts a lane after this
	o.mu.Unlock()
	o.wg.Wait()
	close(o.marks)
	<-o.committed
}

// withTxnKey adds the transaction ID to a JSON object.
func withTxnKey(content json.RawMessage, txn string) json.RawMessage {
	c := strings.TrimSpace(string(content))
	if !strings.HasSuffix(c, "}") {
		return content
	}
	key, _ := json.Marshal(txn)
	sep := ","
	if strings.TrimSpace(c[:len(c)-1]) == "{" {
		sep = ""
	}
	return json.RawMessage(c[:len(c)-1] + sep + `"` + txnContentKey + `":` + string(key) + "}")
}
