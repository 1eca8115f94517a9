package matrix

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"maunium.net/go/mautrix/id"
)

// OutboxItem is an item of the outbox as an operator sees it, without its content.
type OutboxItem struct {
	ID             int64
	Room           id.RoomID
	IdempotencyKey string
	State          string // "pending", "sent" or "failed"
	Attempts       int
	EventID        id.EventID // when sent
	Err            error      // when failed: the cause, typed as SendError.Err
	CreatedAt      time.Time
	SentAt         time.Time // zero unless sent
}

// ErrNoItem is returned by RetryOutboxItem and DropOutboxItem for an item that is not in the
// outbox, or not in a state that allows it.
var ErrNoItem = errors.New("matrix: no such outbox item")

// ListOutbox returns the outbox items of a session in db, oldest first: those in state
// ("pending", "sent", "failed"), or all for "". It needs no client and no homeserver.
func ListOutbox(ctx context.Context, db *dbutil.Database, session, state string) ([]OutboxItem, error) {
	db, err := upgradeDB(ctx, db)
	if err != nil {
		return nil, err
	}
	if session == "" {
		session = "default"
	}
	want := -1
	if state != "" {
		if want = stateNumber(state); want < 0 {
			return nil, fmt.Errorf("%w: outbox state %q is not pending, sent or failed", ErrInvalidContent, state)
		}
	}
	rows, err := db.Query(ctx, `SELECT id, room_id, COALESCE(idempotency_key, ''), state, attempts, event_id, created_at, sent_at,
			error, err_kind, err_status, err_code, err_retry_after, err_request
		FROM samtal_outbox WHERE session = $1 AND ($2 < 0 OR state = $2) ORDER BY id`, session, want)
	if err != nil {
		return nil, fmt.Errorf("matrix: outbox: list: %w", err)
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		var st int
		var created, sent, retryAfter int64
		var f failure
		if err := rows.Scan(&it.ID, &it.Room, &it.IdempotencyKey, &st, &it.Attempts, &it.EventID, &created, &sent,
			&f.Message, &f.Kind, &f.Status, &f.ErrCode, &retryAfter, &f.Request); err != nil {
			return nil, fmt.Errorf("matrix: outbox: list: %w", err)
		}
		it.State = stateNames[st]
		it.CreatedAt = time.UnixMilli(created)
		if sent > 0 {
			it.SentAt = time.UnixMilli(sent)
		}
		if st == stateFailed {
			f.RetryAfter = time.Duration(retryAfter) * time.Millisecond
			it.Err = f.err()
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// RetryOutboxItem makes a failed item pending again, with its attempts reset; a running client
// of the session picks it up within its lease period (OutboxOptions.LeaseDuration), otherwise
// the next New does. It then goes out after what was sent into its room meanwhile. The full
// text of an oversized message is retried with it.
func RetryOutboxItem(ctx context.Context, db *dbutil.Database, session string, itemID int64) error {
	return changeItem(ctx, db, session, itemID, stateFailed, makePending)
}

// makePending makes failed items pending again, with their attempts and failure cleared.
func makePending(ctx context.Context, db *dbutil.Database, ids []int64) error {
	for _, i := range ids {
		if _, err := db.Exec(ctx, `UPDATE samtal_outbox SET state = $1, attempts = 0, error = '', err_kind = '', err_status = 0,
				err_code = '', err_retry_after = 0, err_request = '' WHERE id = $2`, statePending, i); err != nil {
			return err
		}
	}
	return nil
}

// DropOutboxItem deletes a failed or sent item: the failure is acknowledged, and its
// idempotency key may be used again. Pending items are not dropped (a client may be sending
// them); ErrNoItem says so.
func DropOutboxItem(ctx context.Context, db *dbutil.Database, session string, itemID int64) error {
	return changeItem(ctx, db, session, itemID, -1, func(ctx context.Context, db *dbutil.Database, ids []int64) error {
		for _, i := range ids {
			if _, err := db.Exec(ctx, `DELETE FROM samtal_outbox WHERE id = $1`, i); err != nil {
				return err
			}
		}
		return nil
	})
}

// changeItem runs change on an item (and the attachment that belongs to it) in one
// transaction, if the item is in state from (-1: failed or sent).
func changeItem(ctx context.Context, db *dbutil.Database, session string, itemID int64, from int,
	change func(context.Context, *dbutil.Database, []int64) error) error {
	db, err := upgradeDB(ctx, db)
	if err != nil {
		return err
	}
	if session == "" {
		session = "default"
	}
	return changeItemIn(ctx, db, session, itemID, from, change)
}

// changeItemIn is changeItem on a database whose schema is known to be current.
func changeItemIn(ctx context.Context, db *dbutil.Database, session string, itemID int64, from int,
	change func(context.Context, *dbutil.Database, []int64) error) error {
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var st int
		var room id.RoomID
		err := db.QueryRow(ctx, `SELECT state, room_id FROM samtal_outbox WHERE id = $1 AND session = $2`, itemID, session).Scan(&st, &room)
		if err != nil {
			return fmt.Errorf("%w: %d in session %q", ErrNoItem, itemID, session)
		}
		if (from >= 0 && st != from) || (from < 0 && st == statePending) {
			return fmt.Errorf("%w: item %d is %s", ErrNoItem, itemID, stateNames[st])
		}
		ids := []int64{itemID}
		// The full text of an oversized message is the room's next row, in the same state.
		var next int64
		var nextKind string
		var nextState int
		err = db.QueryRow(ctx, `SELECT id, kind, state FROM samtal_outbox WHERE session = $1 AND room_id = $2 AND id > $3 ORDER BY id LIMIT 1`,
			session, room, itemID).Scan(&next, &nextKind, &nextState)
		if err == nil && (nextKind == kindOverflow || nextKind == kindOverflowEnc) && nextState == st {
			ids = append(ids, next)
		}
		return change(ctx, db, ids)
	})
	if err != nil && !errors.Is(err, ErrNoItem) {
		return fmt.Errorf("matrix: outbox: item %d: %w", itemID, err)
	}
	return err
}

var stateNames = map[int]string{statePending: "pending", stateSent: "sent", stateFailed: "failed"}

func stateNumber(name string) int {
	for n, s := range stateNames {
		if s == name {
			return n
		}
	}
	return -1
}
