package matrix

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// PendingItem returns the outbox item itemID (Pending.ID, OutboxItem.ID) of this client's
// session as a Pending, so that a program that stored the ID, and was restarted since, can
// wait for the item's event ID. Wait (and Sent) on an ID this session has no item for returns
// an error matching ErrNoItem at once.
func (c *Client) PendingItem(itemID int64) *Pending {
	return &Pending{ID: itemID, ob: c.outbox}
}

// Sent reports the item's outcome without waiting: its event ID once it is sent, its
// *SendError once it failed for good, and ok false while it is still pending.
func (p *Pending) Sent(ctx context.Context) (evt id.EventID, ok bool, err error) {
	p.ob.mu.Lock()
	r, found := p.ob.results[p.ID]
	p.ob.mu.Unlock()
	if found {
		return r.eventID, true, r.err
	}
	evt, err, done := p.ob.stored(ctx, p.ID)
	return evt, done, err
}

// UploadLimit returns the largest file in bytes the homeserver accepts (its m.upload.size),
// or 0 when it names none or cannot be asked now. A SendFile larger than this fails with
// ErrTooLarge when it is sent.
func (c *Client) UploadLimit(ctx context.Context) int64 {
	return c.uploadLimit(ctx)
}
