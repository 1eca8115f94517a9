package mailbridge

import (
	"context"
	"embed"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_mailbridge_version"

// spool is the durable store of received mail: the raw message and its envelope, and one
// delivery per room it goes to.
type spool struct {
	db      *dbutil.Database
	q       *storage.Statements // db's hot queries, prepared (on SQLite)
	commit  *committer          // group commit of received mail (commit.go)
	claims  claimer             // which deliveries this instance works on (claim.go)
	metrics Metrics             // counts delivery outcomes; set by New
}

// target is one room a received mail goes to.
type target struct {
	room       string // room ID or alias, from Match.Room
	recipient  string // first recipient routed there
	createSpec string // JSON RoomSpec or ""
	refused    string // when set, the delivery is spooled dead with this reason (no content)
	recheck    string // with refused: how a retry checks the mail again first (recheck.go); "" posts it as it is
}

// delivery is a due delivery, with its mail.
type delivery struct {
	spoolID    int64
	target     string
	recipient  string
	createSpec string
	recheck    string // samtal_mail_delivery.recheck: checks to run again before posting
	attempts   int
	mailFrom   string
	receivedAt time.Time
	message    []byte
}

// stateDead is a delivery given up on (samtal_mail_delivery.state; 0 pending, 1 delivered).
const stateDead = 2

func openSpool(ctx context.Context, db *dbutil.Database) (*spool, error) {
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("mailbridge: upgrade spool schema: %w", err)
	}
	q := storage.NewStatements(child)
	s := &spool{db: child, q: q, commit: &committer{db: child, q: q}, metrics: noMetrics{}}
	if err := s.openClaims(ctx, db); err != nil {
		return nil, err
	}
	return s, nil
}

// store commits the mail and its deliveries and returns its spool ID. When it returns nil the
// mail is on disk (SQLite runs with synchronous=FULL, PostgreSQL commits synchronously), so the
// caller may answer 250. Mails stored at the same time share one transaction (commit.go).
func (s *spool) store(ctx context.Context, mailFrom string, message []byte, targets []target) (int64, error) {
	return s.commit.submit(ctx, mailFrom, message, targets)
}

// due claims up to limit pending deliveries whose next attempt is at or before now, a room at a
// time and each room's oldest mail first (claim.go).
func (s *spool) due(ctx context.Context, now time.Time, limit int) ([]delivery, error) {
	return s.claim(ctx, now, limit)
}

// nextAttempt returns when the earliest pending delivery is due, and false when none is
// pending.
func (s *spool) nextAttempt(ctx context.Context) (time.Time, bool, error) {
	// Deliveries held back for a full room (claim.go) are not due: the confirmer wakes the
	// worker when the room's posts are sent.
	if !s.claims.postgres {
		targets, err := s.queueTargets(ctx)
		if err != nil || len(targets) == 0 {
			return time.Time{}, false, err
		}
		next := targets[0].next
		for _, t := range targets[1:] {
			next = min(next, t.next)
		}
		return time.UnixMilli(next), true, nil
	}
	// A claimed delivery is due again, for any instance, when its claim runs out.
	var next *int64
	q := `SELECT MIN(CASE WHEN claimed_until > next_attempt THEN claimed_until ELSE next_attempt END)
		FROM samtal_mail_delivery WHERE state = 0 AND target NOT IN (` + fullTargets("$1") + `)`
	if err := s.db.QueryRow(ctx, q, refillBelow).Scan(&next); err != nil {
		return time.Time{}, false, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(*next), true, nil
}

// delivered marks a delivery done: its message was posted as outbox item outboxID (0: by
// another delivery of the same mail), and sent (confirm.go).
func (s *spool) delivered(ctx context.Context, d delivery, outboxID int64) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 1, outbox_id = $1, last_error = '', claimed_by = '', claimed_until = 0 WHERE spool_id = $2 AND target = $3`,
		outboxID, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: mark mail %d delivered to %s: %w", d.spoolID, d.target, err)
	}
	s.metrics.Delivery(OutcomeDelivered)
	return nil
}

// retryLater records a failed attempt; the delivery is tried again at next. reason must not
// contain message content.
func (s *spool) retryLater(ctx context.Context, d delivery, next time.Time, reason string) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET attempts = attempts + 1, next_attempt = $1, last_error = $2, claimed_by = '', claimed_until = 0 WHERE spool_id = $3 AND target = $4`,
		next.UnixMilli(), reason, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: reschedule mail %d for %s: %w", d.spoolID, d.target, err)
	}
	s.metrics.Delivery(OutcomeRetry)
	return nil
}

// giveUp moves a delivery to the dead-letter state, where it waits for Gateway.Retry.
func (s *spool) giveUp(ctx context.Context, d delivery, reason string) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 2, attempts = attempts + 1, last_error = $1, claimed_by = '', claimed_until = 0 WHERE spool_id = $2 AND target = $3`,
		reason, d.spoolID, d.target)
	if err != nil {
		return fmt.Errorf("mailbridge: give up mail %d for %s: %w", d.spoolID, d.target, err)
	}
	s.metrics.Delivery(OutcomeDead)
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
		m.ReceivedAt, m.Dead, m.Posted = time.UnixMilli(received), state == stateDead, state == statePosted
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
