package mailbridge

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
)

// Spool is the gateway's spool opened for an administrator, without a Gateway: it lists what
// is not delivered yet and revives dead mail, while the gateway itself runs elsewhere on the
// same database (samtal gateway spool list|show|retry). It posts nothing.
type Spool struct {
	s *spool
}

// OpenSpool opens the spool in db, creating its tables if they are missing.
func OpenSpool(ctx context.Context, db *dbutil.Database) (*Spool, error) {
	s, err := openSpool(ctx, db)
	if err != nil {
		return nil, err
	}
	return &Spool{s: s}, nil
}

// Undelivered lists the mail not yet delivered to all its rooms, as Gateway.Undelivered does.
func (sp *Spool) Undelivered(ctx context.Context) ([]SpooledMail, error) {
	return sp.s.undelivered(ctx)
}

// Retry makes the dead deliveries of the mail with spool ID id pending again, as
// Gateway.Retry does. A running gateway finds them at its next look at the spool, within its
// Options.MaxRetryDelay.
func (sp *Spool) Retry(ctx context.Context, id int64) error {
	n, err := sp.s.revive(ctx, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %d", ErrNotInSpool, id)
	}
	return nil
}

// The states of a SpooledMail's delivery, as SpooledMail.State names them.
const (
	StatePending = "pending" // waiting for its next attempt (or being retried)
	StatePosted  = "posted"  // in the matrix outbox, waiting for the homeserver to take it
	StateDead    = "dead"    // given up after Options.DeadLetterAfter; waits for Retry
)

// State names the delivery's state: StatePending, StatePosted or StateDead.
func (m SpooledMail) State() string {
	switch {
	case m.Dead:
		return StateDead
	case m.Posted:
		return StatePosted
	}
	return StatePending
}

// Drop deletes a dead mail from the spool, as Gateway.Drop does.
func (sp *Spool) Drop(ctx context.Context, id int64) error {
	return sp.s.drop(ctx, id)
}
