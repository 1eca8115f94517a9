package mailbridge

import (
	"context"
	"fmt"
	"time"

	"github.com/samtalhq/samtal/internal/storage"
)

// Retention: the spool holds each mail (its raw message and envelope: personal data of the
// people who wrote it) until it is delivered into all its rooms and Options.Retention has
// passed since it was received; then it is deleted. What threads need is kept: the Message-IDs
// and event IDs of samtal_mail_thread and samtal_mail_reference, and the uploads of
// samtal_mail_media, so that a later reply still finds its conversation; the matrix outbox keeps
// its idempotency keys, so that the same mail delivered again after that is still posted once.
// Dead and pending mail stays until delivered or dropped (Spool.Drop), as does IMAP mail whose
// flag or move is not done yet.

// defaultRetention is Options.Retention's zero value.
const defaultRetention = 24 * time.Hour

// retentionSweep is how often the gateway deletes delivered mail past its retention; a
// variable for tests.
var retentionSweep = time.Minute

// expireBatch is how many mails one transaction of a sweep reads and deletes at most.
const expireBatch = 256

// retainLoop deletes delivered mail past its retention and empties SQLite's log (of what it and
// others deleted), a sweep every retentionSweep, until Close.
func (g *Gateway) retainLoop() {
	defer g.worker.Done()
	t := time.NewTicker(retentionSweep)
	defer t.Stop()
	for {
		n, err := g.spool.expire(g.ctx, time.Now().Add(-g.opts.Retention))
		if err != nil && g.ctx.Err() == nil {
			g.log.Warn("delete delivered mail past retention", "err", err)
		}
		if n > 0 {
			g.log.Debug("deleted delivered mail past retention", "mails", n)
		}
		// Every sweep, not only after its own deletes: mail dropped by an admin (samtal
		// gateway spool drop, in another process) or rewritten by a retry is in the log too.
		if _, err := storage.TruncateWAL(g.ctx, g.spool.db, storage.TruncateWait); err != nil && g.ctx.Err() == nil {
			g.log.Warn("empty the database log after deleting mail", "err", err)
		}
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// expirableQuery reads the spool in the order of its IDs (the order mail was received in,
// near enough) from after $1, with whether each mail must be kept: a delivery not done, or an
// IMAP flag or move still to do. Only the columns before the message are read.
const expirableQuery = `SELECT m.id, m.received_at,
	EXISTS (SELECT 1 FROM samtal_mail_delivery d WHERE d.spool_id = m.id AND d.state <> 1)
	OR EXISTS (SELECT 1 FROM samtal_mail_imap_after a WHERE a.spool_id = m.id)
	FROM samtal_mail_spool m WHERE m.id > $1 ORDER BY m.id LIMIT $2`

// expireCondition holds for a mail that may go: every delivery done, no IMAP flag or move to do.
// Checked again as it is deleted, in case a read went stale.
const expireCondition = `NOT EXISTS (SELECT 1 FROM samtal_mail_delivery d WHERE d.spool_id = $1 AND d.state <> 1)
	AND NOT EXISTS (SELECT 1 FROM samtal_mail_imap_after a WHERE a.spool_id = $1)`

// expire deletes the mail received before before whose deliveries are all done, with its
// deliveries and their outbox items, and reports how many mails it deleted. It reads the spool
// from its oldest mail up to the first received after before, so a sweep costs the mail it
// deletes and the mail it must keep, not the rest of the spool. On SQLite the space is
// overwritten (storage.SecureDelete); the caller empties the log (storage.TruncateWAL).
func (s *spool) expire(ctx context.Context, before time.Time) (int, error) {
	cutoff := before.UnixMilli()
	total := 0
	var after int64
	for ctx.Err() == nil {
		ids, last, more, err := s.expirable(ctx, after, cutoff)
		if err != nil {
			return total, err
		}
		if len(ids) > 0 {
			n, err := s.deleteMail(ctx, ids)
			total += n
			if err != nil {
				return total, err
			}
		}
		if !more {
			break
		}
		after = last
	}
	return total, ctx.Err()
}

// expirable reads a batch of the spool after the ID after: the mails that may go, the last ID
// read, and whether there is more to read before the cutoff.
func (s *spool) expirable(ctx context.Context, after, cutoff int64) (ids []int64, last int64, more bool, err error) {
	rows, err := s.db.Query(ctx, expirableQuery, after, expireBatch)
	if err != nil {
		return nil, 0, false, fmt.Errorf("mailbridge: read spool for retention: %w", err)
	}
	defer rows.Close()
	read := 0
	for rows.Next() {
		var id, received int64
		var keep bool
		if err := rows.Scan(&id, &received, &keep); err != nil {
			return nil, 0, false, fmt.Errorf("mailbridge: read spool for retention: %w", err)
		}
		if received >= cutoff {
			if err := rows.Err(); err != nil {
				return nil, 0, false, fmt.Errorf("mailbridge: read spool for retention: %w", err)
			}
			return ids, last, false, nil // the rest is younger
		}
		read++
		last = id
		if !keep {
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, false, fmt.Errorf("mailbridge: read spool for retention: %w", err)
	}
	return ids, last, read == expireBatch, nil
}

// deleteMail deletes the mails ids that may still go, in one transaction, and reports how many
// it deleted.
func (s *spool) deleteMail(ctx context.Context, ids []int64) (int, error) {
	n := 0
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		n = 0
		if err := storage.SecureDelete(ctx, s.db); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := s.db.Exec(ctx, `DELETE FROM samtal_mail_delivery_item WHERE spool_id = $1 AND `+expireCondition, id); err != nil {
				return err
			}
			if _, err := s.db.Exec(ctx, `DELETE FROM samtal_mail_delivery WHERE spool_id = $1 AND `+expireCondition, id); err != nil {
				return err
			}
			res, err := s.db.Exec(ctx, `DELETE FROM samtal_mail_spool WHERE id = $1
				AND NOT EXISTS (SELECT 1 FROM samtal_mail_delivery d WHERE d.spool_id = $1)
				AND NOT EXISTS (SELECT 1 FROM samtal_mail_imap_after a WHERE a.spool_id = $1)`, id)
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err == nil {
				n += int(k)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("mailbridge: delete delivered mail: %w", err)
	}
	return n, nil
}

// drop deletes a mail with a dead delivery and none pending or posted, with its deliveries,
// their outbox items and an IMAP flag or move still to do; ErrNotInSpool when there is none.
func (s *spool) drop(ctx context.Context, spoolID int64) error {
	dropped := false
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		dropped = false
		// On PostgreSQL the rows are locked, so that a Retry of another process waits for
		// the drop (and then finds nothing) rather than revive what is deleted next.
		q := `SELECT state FROM samtal_mail_delivery WHERE spool_id = $1`
		if s.claims.postgres {
			q += ` FOR UPDATE`
		}
		rows, err := s.db.Query(ctx, q, spoolID)
		if err != nil {
			return err
		}
		var dead, busy int
		for rows.Next() {
			var state int
			if err := rows.Scan(&state); err != nil {
				rows.Close()
				return err
			}
			switch state {
			case stateDead:
				dead++
			case 0, statePosted:
				busy++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if dead == 0 || busy > 0 {
			return nil
		}
		if err := storage.SecureDelete(ctx, s.db); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM samtal_mail_delivery_item WHERE spool_id = $1`,
			`DELETE FROM samtal_mail_delivery WHERE spool_id = $1`,
			`DELETE FROM samtal_mail_imap_after WHERE spool_id = $1`,
			`DELETE FROM samtal_mail_spool WHERE id = $1`,
		} {
			if _, err := s.db.Exec(ctx, q, spoolID); err != nil {
				return err
			}
		}
		dropped = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("mailbridge: drop mail %d: %w", spoolID, err)
	}
	if !dropped {
		return fmt.Errorf("%w: %d", ErrNotInSpool, spoolID)
	}
	// Dropped: what is left of it in SQLite's log goes now if the log can be emptied, else at
	// the running gateway's next sweep (retainLoop).
	_, _ = storage.TruncateWAL(ctx, s.db, storage.TruncateWait)
	return nil
}
