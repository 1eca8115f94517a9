package mailbridge

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// SpooledMail is a mail in the spool that has not reached one of its rooms yet. It carries the
// envelope and the delivery's state, never the content.
type SpooledMail struct {
	ID         int64     // spool ID, the same for every room of one mail
	Room       string    // room ID or alias, as routed
	Recipient  string    // the first recipient routed to Room
	MailFrom   string    // envelope sender; "" for a bounce
	ReceivedAt time.Time // when the 250 was sent
	Attempts   int       // failed deliveries so far
	LastError  string    // why the last attempt failed
	Dead       bool      // given up after Options.DeadLetterAfter; waits for Retry
	Posted     bool      // in the matrix outbox, waiting for the homeserver to take it
}

// ErrNotInSpool is returned by Retry and Drop for a spool ID with no dead delivery (Drop: or
// with a delivery still pending or posted).
var ErrNotInSpool = errors.New("mailbridge: no dead-lettered mail with that spool ID")

// Undelivered lists the mail not yet delivered to all its rooms, one entry per room: pending
// (being retried), posted (in the outbox, not sent yet) and dead (given up), oldest first.
func (g *Gateway) Undelivered(ctx context.Context) ([]SpooledMail, error) {
	return g.spool.undelivered(ctx)
}

// Retry makes the dead deliveries of the mail with spool ID id pending again and wakes the
// delivery worker; after fixing what made them fail (a missing alias, a permission), an admin
// calls it. The idempotency key still holds: a room that has the mail does not get it twice.
func (g *Gateway) Retry(ctx context.Context, id int64) error {
	n, err := g.spool.revive(ctx, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %d", ErrNotInSpool, id)
	}
	g.kick()
	return nil
}

// Drop deletes the mail with spool ID id, whose deliveries are dead or done, from the spool:
// an admin's answer to dead mail that is not to be delivered, which the spool would otherwise
// keep (Options.Retention keeps dead mail until it is delivered or dropped). On SQLite its
// content is overwritten in the file. A mail with a delivery pending or posted is not dropped.
func (g *Gateway) Drop(ctx context.Context, id int64) error {
	return g.spool.drop(ctx, id)
}
