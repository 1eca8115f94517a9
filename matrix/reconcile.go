package matrix

import (
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// reconcileSkew allows for the homeserver's clock being behind ours when deciding how far
	// back in the room a stored item could have landed.
	reconcileSkew = 5 * time.Minute
	// reconcilePages bounds the look-back: 50 pages of 100 of the room's events.
	reconcilePages = 50
)

// reconcile runs when a lane starts after a restart: items the previous run may have sent
// without recording it are looked up in the room, recorded as sent, and dropped from rows. It
// retries until the room can be read, and returns ok=false only when the outbox is closing.
//
// A lane sends one item at a time, in order, so at most one of the rest can have been under
// way when the previous run ended: the first after the last one found. The homeserver may
// still store that one's event (it had no answer to give a dead client), so deliver looks for
// it a second time before it sends it (settling).
func (o *outbox) reconcile(room id.RoomID, rows []row) ([]row, bool) {
	for attempt := 1; ; attempt++ {
		found, err := o.findSent(room, rows)
		if err == nil {
			var rest []row
			var last int64 // the last item found
			for _, r := range rows {
				if evt, ok := found[r.id]; ok {
					o.c.log.Info("outbox: item was already in the room", "room", room, "id", r.id, "event", evt)
					o.succeed(r, evt, r.attempts)
					last = r.id
				} else {
					rest = append(rest, r)
				}
			}
			for _, r := range rest {
				if r.id > last {
					o.markSettling(r.id)
					break
				}
			}
			return rest, true
		}
		if o.ctx.Err() != nil {
			return nil, false
		}
		delay := o.backoff(attempt, err)
		o.c.log.Warn("outbox: cannot read the room to resume sends; retrying", "room", room, "retry_in", delay, "err", err)
		if !o.sleep(delay) {
			return nil, false
		}
	}
}

// findSent pages back through our own events in room, newest first, until it passes the time
// the oldest of rows was stored, and returns the event IDs of those rows it finds: by
// unsigned.transaction_id where the server echoes it to the sending device, else by the
// transaction ID the outbox put in the content.
func (o *outbox) findSent(room id.RoomID, rows []row) (map[int64]id.EventID, error) {
	want := make(map[string]int64, len(rows))
	oldest := time.Now()
	for _, r := range rows {
		want[o.txnID(r.id)] = r.id
		if r.createdAt.Before(oldest) {
			oldest = r.createdAt
		}
	}
	stop := oldest.Add(-reconcileSkew).UnixMilli()
	found := map[int64]id.EventID{}
	from := ""
	for page := 0; page < reconcilePages && len(found) < len(want); page++ {
		// Unfiltered: Dendrite applies a senders filter after the page limit, so a page of
		// other people's events comes back empty, with no token to go on, and our own
		// events further back would never be seen.
		resp, err := o.c.send.Messages(o.ctx, room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", room, wrapErr(err))
		}
		enc := o.c.encryption()
		for _, evt := range resp.Chunk {
			if evt.Sender != o.c.UserID() {
				continue
			}
			if enc != nil && evt.Type == event.EventEncrypted && evt.Unsigned.TransactionID == "" {
				// Our own events are readable to us: the outbound session is ours.
				evt.RoomID = room
				if err := evt.Content.ParseRaw(evt.Type); err == nil {
					if clear, err := enc.Decrypt(o.ctx, evt); err == nil {
						evt = clear
					}
				}
			}
			txn := evt.Unsigned.TransactionID
			if _, ok := want[txn]; !ok {
				txn, _ = evt.Content.Raw[txnContentKey].(string)
			}
			if rowID, ok := want[txn]; ok {
				found[rowID] = evt.ID
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.Chunk[len(resp.Chunk)-1].Timestamp < stop {
			break
		}
		from = resp.End
	}
	return found, nil
}
