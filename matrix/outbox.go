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
	"sync/atomic"
	"time"

	"go.mau.fi/util/dbutil"

	"maunium.net/go/mautrix/id"
)

// OutboxOptions configure how sends are queued and retried. The zero value is a good default.
type OutboxOptions struct {
	MaxParallelRooms int           // rooms sent to at the same time; 0 means 16
	MinRetryDelay    time.Duration // first wait after a temporary failure; 0 means 250 ms
	MaxRetryDelay    time.Duration // longest wait between tries (rate limits excepted); 0 means 15 s
	MaxAttempts      int           // tries before a temporary failure becomes final; 0 means no limit
	// OnOutcome is called when an item is sent or fails for good; it must not block. It is
	// called at least once per item: an item whose outcome was reported just before a crash,
	// but not yet recorded, is found in the room after the restart and reported again, with
	// the same ID and event ID. Deduplicate by Outcome.ID where that matters.
	OnOutcome func(Outcome)
	// ResumeDelay is how long a lane waits, after a restart or a send with no answer, before
	// it looks in the room for items whose fate is unknown; an item not found there is looked
	// for once more, ResumeDelay later, before it is sent again. A homeserver may still be
	// working on a request whose client died, and only shows the event once it is done
	// (Dendrite even stores it after it has logged the request as failed, and then does not
	// know its transaction ID); sending it again before would post it twice. 0 means 3 s.
	ResumeDelay time.Duration
	// Retention is how long a delivered item keeps its content in the database, for rooms that
	// are not encrypted; items delivered into encrypted rooms drop it at once. The event ID,
	// room and idempotency key are kept, so that a repeated key is still recognised. Failed
	// items are kept until dropped (samtal outbox drop). 0 means 24 hours; negative: at once.
	Retention time.Duration
	// LeaseDuration is how long a process may work a room's lane without renewing its claim.
	// Processes that share a session on PostgreSQL share the rooms this way: one sender per
	// room at a time, and the rooms of a process that died are taken over when its leases run
	// out. 0 means 30 s.
	LeaseDuration time.Duration
}

// SendOptions are per-send settings.
type SendOptions struct {
	// IdempotencyKey names the logical send, such as "case-4711/update-3". The key is bound
	// to the room and the content of the send that first used it in this session: a second
	// Send with the same key, room and content returns the first one's Pending (Duplicate
	// set) and sends nothing; the same key with another room or other content returns
	// ErrIdempotencyConflict. Include the case or room in the key when one logical update
	// goes to several rooms.
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
	// Err is the cause, the same value whenever and wherever it is read (at once, later,
	// after a restart): an *HTTPError for a refusal by the homeserver, otherwise an error
	// matching the sentinel of what went wrong (ErrUnreachable, ErrInvalidContent,
	// ErrTooLarge, ErrEncryptionRequired).
	Err error
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

// Wait returns the event ID once the homeserver has accepted the event, or the item's
// *SendError if it failed for good. Accepted is all it means: the event is in the room, and
// nothing is known about its delivery to other servers or to the members' devices.
//
// When the homeserver refuses the session's token, Wait returns an error matching
// ErrUnknownToken (not a *SendError): the item stays pending, and a client logged in again as
// the same user sends it.
func (p *Pending) Wait(ctx context.Context) (id.EventID, error) {
	return p.ob.wait(ctx, p.ID)
}

// Row states.
const (
	statePending = 0
	stateSent    = 1
	stateFailed  = 2
)

// Row kinds: what the lane does with an item before it sends it.
const (
	kindMessage     = ""             // content as stored (content_enc in encrypted rooms)
	kindFile        = "file"         // upload data, then send the file message
	kindOverflow    = "overflow"     // the full text of the message before it, as a file
	kindOverflowEnc = "overflow-enc" // the same, only when the room is encrypted
)

// txnContentKey carries the transaction ID inside the content, so that after a crash the
// outbox can recognise its own events in the room even where the server has forgotten the
// transaction (restarted) or does not echo unsigned.transaction_id.
const txnContentKey = "io.samtal.txn_id"

// outbox is the durable send queue of one client. Send and SendFile store items
// (outbox_send.go); a lane per room sends them (outbox_lane.go); outcomes go to waiters and
// into the database (outbox_marks.go).
type outbox struct {
	c        *Client
	db       *dbutil.Database
	opts     OutboxOptions
	instance string // prefix of transaction IDs, one per database
	holder   string // this outbox's name in leases, one per process
	sem      chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	lanes     map[id.RoomID]chan struct{} // a running lane per room, and its wake-up signal
	waiters   map[int64][]chan result
	results   map[int64]result // sent, not yet committed as sent
	held      bool             // the token was refused: lanes wait for a new login
	heldErr   error            // why, for waiters
	heldCh    chan struct{}    // closed when held is set
	marks     chan mark
	committed chan struct{} // closed when commitMarks has written the last mark
	// markCommits and marksWritten count commitMarks' transactions and the marks they wrote.
	markCommits, marksWritten atomic.Int64
	// scrub is set when content was dropped since the sweep last emptied SQLite's log.
	scrub atomic.Bool

	// Outcome watchers and requeued items (outbox_watch.go):
	watchMu   sync.Mutex
	watchers  map[int]func(Outcome) // Client.WatchOutcomes, by registration
	nextWatch int
	recheck   map[int64]bool     // requeued items that may have reached the room: look there first (under mu)
	rewind    map[id.RoomID]bool // rooms with requeued items: the lane starts from its first item again (under mu)
	// Resumed items (reconcile.go):
	settling map[int64]bool // looked for once after a restart, not found: look again before sending (under mu)
}

type result struct {
	room    id.RoomID
	eventID id.EventID
	err     error
}

// row is a pending item as the lane reads it.
type row struct {
	id         int64
	room       id.RoomID
	kind       string
	evtType    string
	content    json.RawMessage
	contentEnc json.RawMessage
	upload     json.RawMessage
	uploadMode int
	key        string
	createdAt  time.Time
	attempts   int
	encrypting bool
	encrypted  bool // set when sent: whether it went into an encrypted room
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
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = 30 * time.Second
	}
	o := &outbox{
		c: c, db: c.db, opts: opts,
		holder:    randomHex(8),
		sem:       make(chan struct{}, opts.MaxParallelRooms),
		lanes:     map[id.RoomID]chan struct{}{},
		waiters:   map[int64][]chan result{},
		results:   map[int64]result{},
		marks:     make(chan mark, 1024),
		committed: make(chan struct{}),
		heldCh:    make(chan struct{}),
		watchers:  map[int]func(Outcome){},
		recheck:   map[int64]bool{},
		rewind:    map[id.RoomID]bool{},
		settling:  map[int64]bool{},
	}
	var err error
	if o.instance, err = o.loadInstance(ctx); err != nil {
		return nil, err
	}
	if o.db.Dialect == dbutil.SQLite {
		// One process owns a SQLite database: leases left in it are a dead run's.
		if _, err := o.db.Exec(ctx, `DELETE FROM samtal_outbox_lease WHERE session = $1`, c.name); err != nil {
			return nil, fmt.Errorf("matrix: outbox: %w", err)
		}
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	go o.commitMarks()
	// Resume what a previous run left. Each lane first checks the room for items that were
	// sent but not yet recorded as sent when that run ended.
	rooms, err := o.pendingRooms(ctx)
	if err != nil {
		o.close()
		return nil, err
	}
	for _, r := range rooms {
		o.wake(r, true)
	}
	if len(rooms) > 0 {
		c.log.Info("outbox: resuming pending sends", "rooms", len(rooms))
	}
	o.wg.Add(1)
	go o.sweep()
	return o, nil
}

// pendingRooms lists the rooms with items to send.
func (o *outbox) pendingRooms(ctx context.Context) ([]id.RoomID, error) {
	rows, err := o.db.Query(ctx, `SELECT DISTINCT room_id FROM samtal_outbox WHERE session = $1 AND state = $2`, o.c.name, statePending)
	if err != nil {
		return nil, fmt.Errorf("matrix: outbox: find pending sends: %w", err)
	}
	defer rows.Close()
	var rooms []id.RoomID
	for rows.Next() {
		var r id.RoomID
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("matrix: outbox: find pending sends: %w", err)
		}
		rooms = append(rooms, r)
	}
	return rooms, rows.Err()
}

// sweep runs until the outbox closes. Once per lease period it starts lanes for rooms with
// pending items that no lane here works on (stored by another process that died, or held by
// one whose lease ran out), drops the content of delivered items past their retention, and
// empties SQLite's log of content dropped since the last sweep.
func (o *outbox) sweep() {
	defer o.wg.Done()
	for o.sleep(o.opts.LeaseDuration) {
		if rooms, err := o.pendingRooms(o.ctx); err == nil {
			for _, r := range rooms {
				o.wake(r, true)
			}
		}
		o.expireContent()
		o.scrubLog()
	}
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
	if _, err := o.db.Exec(ctx, `INSERT INTO samtal_outbox_instance (singleton, instance) VALUES (1, $1) ON CONFLICT DO NOTHING`, randomHex(6)); err != nil {
		return "", fmt.Errorf("matrix: outbox: %w", err)
	}
	return o.loadInstance(ctx)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (o *outbox) txnID(rowID int64) string {
	return "samtal." + o.instance + "." + strconv.FormatInt(rowID, 10)
}

// close stops the lanes, then records what they sent.
func (o *outbox) close() {
	o.mu.Lock()
	o.cancel() // under mu, so that wake never starts a lane after this
	o.mu.Unlock()
	o.wg.Wait()
	close(o.marks)
	<-o.committed
	// What the lanes sent is recorded: other processes may take the rooms at once.
	if _, err := o.db.Exec(context.Background(), `DELETE FROM samtal_outbox_lease WHERE session = $1 AND holder = $2`, o.c.name, o.holder); err != nil {
		o.c.log.Warn("outbox: release rooms", "err", err)
	}
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
