package mailbridge

import (
	"context"
	"embed"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_mailbridge_version"

// spool is the durable store of received mail: the raw message and its envelope, and one
// delivery per room it goes to.
type spool struct {
	db *dbutil.Database
}

// target is one room a received mail goes to.
type target struct {
	room       string // room ID or alias, from Match.Room
	recipient  string // first recipient routed there
	createSpec string // JSON RoomSpec or ""
}

// delivery is a due delivery, with its mail.
type delivery struct {
	spoolID    int64
	target     string
	recipient  string
	createSpec string
	attempts   int
	mailFrom   string
	receivedAt time.Time
	message    []byte
}

// stateDead is a delivery given up on (samtal_mail_delivery.state; 0 pending, 1 delivered).
const stateDead = 2

func openSpool(ctx context.Context, db *dbutil.Database) (*spool, error) {
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("mailbridge: upgrade spool schema: %w", err)
	}
	return &spool{db: child}, nil
}

// store commits the mail and its deliveries in one transaction and returns its spool ID. When
// it returns nil the mail is on disk (SQLite runs with synchronous=FULL, PostgreSQL commits
// synchronously), so the caller may answer 250.
func (s *spool) store(ctx context.Context, mailFrom string, message []byte, targets []target) (int64, error) {
	var spoolID int64
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := s.db.QueryRow(ctx, `INSERT INTO samtal_mail_spool (received_at, mail_from, message) VALUES ($1, $2, $3) RETURNING id`,
			time.Now().UnixMilli(), mailFrom, message).Scan(&spoolID)
		if err != nil {
			return err
		}
		for _, t := range targets {
			_, err := s.db.Exec(ctx, `INSERT INTO samtal_mail_delivery (spool_id, target, recipient, create_spec) VALUES ($1, $2, $3, $4)`,
				spoolID, t.room, t.recipient, t.createSpec)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("mailbridge: spool mail: %w", err)
	}
	return spoolID, nil
}

// due returns up to limit pending deliveries whose next attempt is at or before now, oldest
// mail first.
func (s *spool) due(ctx context.Context, now time.Time, limit int) ([]delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT d.spool_id, d.target, d.recipient, d.create_spec, d.attempts, m.mail_from, m.received_at, m.message
		FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id
		WHERE d.state = 0 AND d.next_attempt <= $1 ORDER BY d.spool_id, d.target LIMIT $2`, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	defer rows.Close()
	var out []delivery
	for rows.Next() {
		var d delivery
		var received int64
		if err := rows.Scan(&d.spoolID, &d.target, &d.recipient, &d.createSpec, &d.attempts, &d.mailFrom, &received, &d.message); err != nil {
			return nil, fmt.Errorf("mailbridge: read spool: %w", err)
		}
		d.receivedAt = time.UnixMilli(received)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	return out, nil
}

// nextAttempt returns when the earliest pending delivery is due, and false when none is
// pending.
func (s *spool) nextAttempt(ctx context.Context) (time.Time, bool, error) {
	var next *int64
	if err := s.db.QueryRow(ctx, `SELECT MIN(next_attempt) FROM samtal_mail_delivery WHERE state = 0`).Scan(&next); err != nil {
		return time.Time{}, false, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(*next), true, nil
}

// delivered marks a delivery done: its message is in the matrix outbox as outboxID.
func (s *spool) delivered(ctx context.Context, d delivery, outboxID int64) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 1, outbox_id = $1, last_error = '' WHERE spool_id = $2 AND target = $3`,
		outboxID, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: mark mail %d delivered to %s: %w", d.spoolID, d.target, err)
	}
	return nil
}

// retryLater records a failed attempt; the delivery is tried again at next. reason must not
// contain message content.
func (s *spool) retryLater(ctx context.Context, d delivery, next time.Time, reason string) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET attempts = attempts + 1, next_attempt = $1, last_error = $2 WHERE spool_id = $3 AND target = $4`,
		next.UnixMilli(), reason, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: reschedule mail %d for %s: %w", d.spoolID, d.target, err)
	}
	return nil
}

// giveUp moves a delivery to the dead-letter state, where it waits for Gateway.Retry.
func (s *spool) giveUp(ctx context.Context, d delivery, reason string) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 2, attempts = attempts + 1, last_error = $1 WHERE spool_id = $2 AND target = $3`,
		reason, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: give up mail %d for %s: %w", d.spoolID, d.target, err)
	}
	return nil
}

// undelivered lists the deliveries not done yet, pending and dead, oldest first.
func (s *spool) undelivered(ctx context.Context) ([]SpooledMail, error) {
	rows, err := s.db.Query(ctx, `SELECT d.spool_id, d.target, d.recipient, m.mail_from, m.received_at, d.attempts, d.last_error, d.state
		FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id
		WHERE d.state <> 1 ORDER BY d.spool_id, d.target`)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	defer rows.Close()
	var out []SpooledMail
	for rows.Next() {
		var m SpooledMail
		var received int64
		var state int
		if err := rows.Scan(&m.ID, &m.Room, &m.Recipient, &m.MailFrom, &received, &m.Attempts, &m.LastError, &state); err != nil {
			return nil, fmt.Errorf("mailbridge: read spool: %w", err)
		}
		m.ReceivedAt, m.Dead = time.UnixMilli(received), state == stateDead
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	return out, nil
}

// revive makes the dead deliveries of a mail pending again, due now, and reports how many.
func (s *spool) revive(ctx context.Context, spoolID int64) (int64, error) {
	res, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 0, next_attempt = 0 WHERE spool_id = $1 AND state = 2`, spoolID)
	if err != nil {
		return 0, fmt.Errorf("mailbridge: retry mail %d: %w", spoolID, err)
	}
	return res.RowsAffected()
}
