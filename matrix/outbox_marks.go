package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/samtalhq/samtal/internal/backoff"
	"github.com/samtalhq/samtal/internal/storage"
	"maunium.net/go/mautrix/id"
)

// mark is a sent item on its way to the database.
type mark struct {
	id        int64
	eventID   id.EventID
	attempts  int
	encrypted bool // into an encrypted room: the content is dropped with the mark
}

func (o *outbox) succeed(r row, evt id.EventID, attempts int) {
	o.mu.Lock()
	o.results[r.id] = result{room: r.room, eventID: evt}
	ws := o.waiters[r.id]
	delete(o.waiters, r.id)
	o.mu.Unlock()
	for _, w := range ws {
		w <- result{eventID: evt}
	}
	o.marks <- mark{id: r.id, eventID: evt, attempts: attempts, encrypted: r.encrypted}
	o.notify(Outcome{ID: r.id, Room: r.room, IdempotencyKey: r.key, EventID: evt})
}

// skip records an item that turned out not to be needed (the full text of a message that
// fitted after all) as sent, with no event.
func (o *outbox) skip(r row) {
	o.mu.Lock()
	o.results[r.id] = result{room: r.room}
	o.mu.Unlock()
	o.marks <- mark{id: r.id}
}

func (o *outbox) fail(r row, cause error, attempts int) {
	f := newFailure(cause)
	serr := &SendError{ID: r.id, Room: r.room, Err: f.err()}
	o.c.log.Error("outbox: send failed for good", "room", r.room, "id", r.id, "attempts", attempts, "err", serr.Err)
	_, err := o.db.Exec(context.Background(), `UPDATE samtal_outbox SET state = $1, attempts = $2, error = $3, err_kind = $4,
			err_status = $5, err_code = $6, err_retry_after = $7, err_request = $8 WHERE id = $9`,
		stateFailed, attempts, f.Message, f.Kind, f.Status, f.ErrCode, f.RetryAfter.Milliseconds(), f.Request, r.id)
	if err != nil {
		o.c.log.Error("outbox: record failure", "id", r.id, "err", err)
	}
	o.mu.Lock()
	ws := o.waiters[r.id]
	delete(o.waiters, r.id)
	o.mu.Unlock()
	for _, w := range ws {
		w <- result{err: serr}
	}
	o.notify(Outcome{ID: r.id, Room: r.room, IdempotencyKey: r.key, Err: serr})
}

// failure is a final error as the outbox stores it: enough to make it typed again. Waiters
// get the rebuilt error even in the process that saw the original, so that what a caller
// can test with errors.Is and errors.As does not depend on when or where it asks.
type failure struct {
	Kind       string // "http", or the sentinel of a local failure (see failureKinds)
	Status     int
	ErrCode    string
	RetryAfter time.Duration
	Request    string // "PUT /_matrix/client/..." for an HTTP failure
	Message    string // the server's message, or the local error's text
}

// failureKinds names the sentinels a stored failure can match, the first that matches wins.
var failureKinds = []struct {
	name     string
	sentinel error
}{
	{"unreachable", ErrUnreachable},
	{"encryption_required", ErrEncryptionRequired},
	{"too_large", ErrTooLarge},
	{"invalid_content", ErrInvalidContent},
	{"unknown_token", ErrUnknownToken},
}

func newFailure(err error) failure {
	var he *HTTPError
	if errors.As(err, &he) {
		return failure{Kind: "http", Status: he.Status, ErrCode: he.ErrCode, RetryAfter: he.RetryAfter,
			Request: strings.TrimSpace(he.Method + " " + he.Path), Message: he.Message}
	}
	f := failure{Kind: "local", Message: err.Error()}
	for _, k := range failureKinds {
		if errors.Is(err, k.sentinel) {
			f.Kind = k.name
			break
		}
	}
	return f
}

// err rebuilds the error.
func (f failure) err() error {
	if f.Kind == "http" {
		method, path, _ := strings.Cut(f.Request, " ")
		return &HTTPError{Method: method, Path: path, Status: f.Status, ErrCode: f.ErrCode, Message: f.Message, RetryAfter: f.RetryAfter}
	}
	for _, k := range failureKinds {
		if k.name == f.Kind {
			return &storedError{msg: f.Message, sentinel: k.sentinel}
		}
	}
	return errors.New(f.Message)
}

// storedError is a local failure read back: its text, matching its sentinel.
type storedError struct {
	msg      string
	sentinel error
}

func (e *storedError) Error() string { return e.msg }
func (e *storedError) Unwrap() error { return e.sentinel }

// commitMarks records sent items in batches: a send is acknowledged to waiters at once, and
// written as sent with the next batch. An item whose mark is lost in a crash is found in the
// room by reconcile on the next start, not sent twice. A lane sends one item after another, so
// the marks of a busy room come one at a time: they are gathered for up to markGather, which
// makes one commit of many, not one each. It returns when marks is closed.
func (o *outbox) commitMarks() {
	defer close(o.committed)
	for m := range o.marks {
		batch := []mark{m}
		wait := markGather
		if m.encrypted || o.opts.Retention < 0 {
			wait = 0 // its plaintext is dropped with the mark: at once, as before
		}
		gather := time.NewTimer(wait)
	more:
		for len(batch) < 512 {
			select {
			case m, ok := <-o.marks:
				if !ok {
					break more // closing: write what there is
				}
				batch = append(batch, m)
			case <-gather.C:
				break more
			}
		}
		gather.Stop()
		o.writeMarks(batch)
	}
}

// markGather is how long commitMarks gathers the marks of sent items before it writes them.
// Nothing waits for the write: the results are in memory meanwhile. A variable for a test.
var markGather = 100 * time.Millisecond

func (o *outbox) writeMarks(batch []mark) {
	if len(batch) == 0 {
		return
	}
	now := time.Now().UnixMilli()
	for attempt := 1; ; attempt++ {
		err := o.db.DoTxn(context.Background(), nil, func(ctx context.Context) error {
			for _, m := range batch {
				if m.encrypted || o.opts.Retention < 0 {
					if err := storage.SecureDelete(ctx, o.db); err != nil {
						return err
					}
					break
				}
			}
			for _, m := range batch {
				q := `UPDATE samtal_outbox SET state = $1, event_id = $2, sent_at = $3, attempts = $4, encrypted = $5, data = NULL WHERE id = $6`
				if m.encrypted || o.opts.Retention < 0 {
					// The plaintext of what went into an encrypted room is not kept: the
					// event ID, room and key are enough to recognise a repeated send.
					q = `UPDATE samtal_outbox SET state = $1, event_id = $2, sent_at = $3, attempts = $4, encrypted = $5,
						data = NULL, content = '', content_enc = '', upload = '' WHERE id = $6`
				}
				enc := 0
				if m.encrypted {
					enc = 1
				}
				if _, err := o.c.q.Exec(ctx, q, stateSent, m.eventID, now, m.attempts, enc, m.id); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, m := range batch {
				if m.encrypted || o.opts.Retention < 0 {
					o.scrub.Store(true) // plaintext dropped: the sweep empties the log
					break
				}
			}
			o.markCommits.Add(1)
			o.marksWritten.Add(int64(len(batch)))
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

// expireContent drops the content of items delivered longer ago than the retention.
func (o *outbox) expireContent() {
	before := time.Now().Add(-o.opts.Retention).UnixMilli()
	err := o.db.DoTxn(o.ctx, nil, func(ctx context.Context) error {
		if err := storage.SecureDelete(ctx, o.db); err != nil {
			return err
		}
		res, err := o.db.Exec(ctx, `UPDATE samtal_outbox SET content = '', content_enc = '', upload = '', data = NULL
			WHERE session = $1 AND state = $2 AND sent_at < $3 AND content <> ''`, o.c.name, stateSent, before)
		if err == nil {
			if n, _ := res.RowsAffected(); n > 0 {
				o.scrub.Store(true)
			}
		}
		return err
	})
	if err != nil && o.ctx.Err() == nil {
		o.c.log.Warn("outbox: drop content past retention", "err", err)
	}
}

// scrubLog empties SQLite's write-ahead log after content was dropped, so that the plaintext a
// secure delete overwrote in the database is gone from the log as well (storage.TruncateWAL);
// until then the log holds the pages as they were.
func (o *outbox) scrubLog() {
	if !o.scrub.Swap(false) {
		return
	}
	done, err := storage.TruncateWAL(o.ctx, o.db, storage.TruncateWait)
	if err != nil && o.ctx.Err() == nil {
		o.c.log.Warn("outbox: empty the database log after dropping content", "err", err)
	}
	if !done {
		o.scrub.Store(true) // the next sweep tries again
	}
}

// waitPoll is how often a waiter looks in the database, for items another process sends.
const waitPoll = time.Second

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

	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	for {
		evt, err, done := o.stored(ctx, rowID)
		if done {
			return evt, err
		}
		select {
		case r := <-ch:
			return r.eventID, r.err
		case <-ctx.Done():
			return "", ctx.Err()
		case <-o.ctx.Done():
			return "", ErrClosed
		case <-o.heldCh:
			o.mu.Lock()
			err := o.heldErr
			o.mu.Unlock()
			return "", err
		case <-tick.C:
		}
	}
}

// stored reads an item's outcome from the database; done is false while it is pending.
func (o *outbox) stored(ctx context.Context, rowID int64) (evt id.EventID, err error, done bool) {
	var state int
	var room id.RoomID
	var f failure
	var retryAfter int64
	err = o.c.q.QueryRow(ctx, `SELECT state, event_id, room_id, error, err_kind, err_status, err_code, err_retry_after, err_request
		FROM samtal_outbox WHERE id = $1 AND session = $2`, rowID, o.c.name).
		Scan(&state, &evt, &room, &f.Message, &f.Kind, &f.Status, &f.ErrCode, &retryAfter, &f.Request)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: %d in session %q", ErrNoItem, rowID, o.c.name), true
	}
	if err != nil {
		return "", fmt.Errorf("matrix: outbox: %w", err), true
	}
	f.RetryAfter = time.Duration(retryAfter) * time.Millisecond
	switch state {
	case stateSent:
		return evt, nil, true
	case stateFailed:
		return "", &SendError{ID: rowID, Room: room, Err: f.err()}, true
	}
	return "", nil, false
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
