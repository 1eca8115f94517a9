package matrix

import (
	"context"

	"go.mau.fi/util/dbutil"

	"maunium.net/go/mautrix/id"
)

// Watching outcomes and requeueing failed items: for a program that hands its sends to the
// outbox and must know that each one arrived (a mail gateway that accepted a mail), without a
// goroutine waiting on every item.

// WatchOutcomes calls f, as OutboxOptions.OnOutcome is called, whenever an item of this client's
// outbox is sent or fails for good, until stop is called. f must not block. Like OnOutcome it
// is called at least once per item that this process sends: an item may be reported twice
// (found in the room after a restart), and an item that was sent before f was registered, or
// by another process sharing the session, is not reported; ask Pending.Sent for those.
func (c *Client) WatchOutcomes(f func(Outcome)) (stop func()) {
	o := c.outbox
	o.watchMu.Lock()
	n := o.nextWatch
	o.nextWatch++
	o.watchers[n] = f
	o.watchMu.Unlock()
	return func() {
		o.watchMu.Lock()
		delete(o.watchers, n)
		o.watchMu.Unlock()
	}
}

// notify gives an outcome to OutboxOptions.OnOutcome and to every watcher.
func (o *outbox) notify(out Outcome) {
	if o.opts.OnOutcome != nil {
		o.opts.OnOutcome(out)
	}
	o.watchMu.Lock()
	fs := make([]func(Outcome), 0, len(o.watchers))
	for _, f := range o.watchers {
		fs = append(fs, f)
	}
	o.watchMu.Unlock()
	for _, f := range fs {
		f(out)
	}
}

// Requeue makes the failed item itemID of this client's outbox (and the full text of an
// oversized message that belongs to it) pending again, with its attempts reset, and starts its
// room's sender at once; the item keeps its ID and idempotency key, and goes out after what
// was sent into its room meanwhile. Where the failure may have reached the room (anything
// but a refusal by the homeserver), the room is searched for the item before it is sent
// again, so that it is not posted twice. An item that is not failed gives ErrNoItem.
//
// It is RetryOutboxItem for a running client, which a program calls when a failure for good
// was not final for it, such as a refusal by a homeserver that was still starting.
func (c *Client) Requeue(ctx context.Context, itemID int64) error {
	o := c.outbox
	if o.ctx.Err() != nil {
		return ErrClosed
	}
	var room id.RoomID
	var maybeSent []int64
	err := changeItemIn(ctx, o.db, c.name, itemID, stateFailed, func(ctx context.Context, db *dbutil.Database, ids []int64) error {
		for _, i := range ids {
			var kind string
			if err := db.QueryRow(ctx, `SELECT room_id, err_kind FROM samtal_outbox WHERE id = $1`, i).Scan(&room, &kind); err != nil {
				return err
			}
			if kind != "http" {
				maybeSent = append(maybeSent, i)
			}
		}
		return makePending(ctx, db, ids)
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	for _, i := range maybeSent {
		o.recheck[i] = true
	}
	o.rewind[room] = true
	o.mu.Unlock()
	c.log.Info("outbox: failed item requeued", "room", room, "id", itemID)
	o.wakeAfter(ctx, room)
	return nil
}

// takeRecheck reports, once, whether item rowID was requeued after a failure that may have
// reached the room.
func (o *outbox) takeRecheck(rowID int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.recheck[rowID] {
		return false
	}
	delete(o.recheck, rowID)
	return true
}

// takeRewind reports, once, whether an item of room was requeued.
func (o *outbox) takeRewind(room id.RoomID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.rewind[room] {
		return false
	}
	delete(o.rewind, room)
	return true
}

// markSettling records that item rowID, which may have been under way when the previous run
// ended, was looked for once and not found: deliver looks once more before it sends it.
func (o *outbox) markSettling(rowID int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.settling[rowID] = true
}

// takeSettling reports, once, whether item rowID was marked by markSettling.
func (o *outbox) takeSettling(rowID int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.settling[rowID] {
		return false
	}
	delete(o.settling, rowID)
	return true
}
