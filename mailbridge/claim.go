package mailbridge

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

// Claims: several gateway instances on one PostgreSQL database share one spool. A delivery
// worker claims a batch of due deliveries with SELECT ... FOR UPDATE SKIP LOCKED, so that two
// workers never take the same rows, and marks them with its name and a lease. A claim that
// runs out (its instance died, or is stuck) is free to take again. Two instances that both
// posted a mail, because a lease ran out under a slow one, still post it once: they share the
// client session, whose outbox knows the mail's idempotency key.
//
// SQLite is owned by one process (as the matrix outbox assumes too): there claims are not
// needed and not checked, so that a gateway restarted after a crash delivers at once what the
// dead one had claimed.

//go:embed schema/claim/*.sql
var claimSchemaFS embed.FS

var claimUpgrades = dbutil.BuildUpgradeTable().WithFSPath(claimSchemaFS, "schema/claim").Finish()

// claimVersionTable records the claim columns' schema version, apart from the spool's own so
// that the two evolve independently.
const claimVersionTable = "samtal_mailbridge_claim_version"

// defaultClaimLease is how long a claim holds when Options.ClaimLease is 0.
const defaultClaimLease = 30 * time.Second

// claimer is how this instance claims deliveries.
type claimer struct {
	holder   string        // this instance's name in claimed_by, random per Gateway
	lease    time.Duration // how long a claim holds
	postgres bool          // claims are taken and checked (PostgreSQL); SQLite: not needed
}

func (s *spool) openClaims(ctx context.Context, db *dbutil.Database) error {
	child := db.Child(claimVersionTable, claimUpgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return fmt.Errorf("mailbridge: upgrade spool claim schema: %w", err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	s.claims = claimer{holder: hex.EncodeToString(b), lease: defaultClaimLease, postgres: db.Dialect == dbutil.Postgres}
	return nil
}

// refillBelow bounds a room's deliveries that are posted into the outbox and not yet sent: a
// room takes more only while it has fewer than refillBelow of them, and then at most one claimed
// batch (deliveryBatch) more, so it never has more than 63. After a burst the backlog waits in
// the spool, not in the outbox: the delivery worker posts a room's next mails as the outbox
// sends the earlier ones (a room's sends go out one after another, so posting thousands ahead
// delivers none sooner), and the outbox and the confirmer work on dozens of items, not on the
// whole backlog. Other rooms are not held up by a room that is full.
//
// The room is refilled a batch at a time, below half its bound, rather than a mail each time
// one is sent: a pass of the worker per sent mail cost a claim per mail (blocked.go).
const refillBelow = deliveryBatch

// fullTargets selects the targets with at least the number of posted deliveries in the query
// parameter param ("$1"): those that take no more (refillBelow).
func fullTargets(param string) string {
	return `SELECT target FROM samtal_mail_delivery WHERE state = 3 GROUP BY target HAVING COUNT(*) >= ` + param
}

// pendingTarget is a target with pending deliveries, and when the earliest of them is due.
type pendingTarget struct {
	target string
	next   int64 // Unix milliseconds
}

// queueTargetsQuery is a loose index scan over the queue index: each step finds the next
// target with pending deliveries, and its earliest due time, in a probe of the index.
const queueTargetsQuery = `WITH RECURSIVE t(target) AS (
		SELECT MIN(target) FROM samtal_mail_delivery WHERE state = 0
		UNION ALL
		SELECT (SELECT MIN(d.target) FROM samtal_mail_delivery d WHERE d.state = 0 AND d.target > t.target)
		FROM t WHERE t.target IS NOT NULL
	)
	SELECT t.target, (SELECT MIN(d.next_attempt) FROM samtal_mail_delivery d WHERE d.state = 0 AND d.target = t.target)
	FROM t WHERE t.target IS NOT NULL`

// queueTargets lists the targets with pending deliveries, in the order of their names, that
// are not full (refillBelow), with when each one's earliest delivery is due. It reads the
// queue index (schema/04-queue.sql) with a loose index scan: two probes per target, whatever
// the backlog, where reading the pending deliveries themselves cost a row per mail waiting.
func (s *spool) queueTargets(ctx context.Context) ([]pendingTarget, error) {
	full := map[string]bool{}
	rows, err := s.q.Query(ctx, fullTargets("$1"), refillBelow)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return nil, fmt.Errorf("mailbridge: read spool: %w", err)
		}
		full[t] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	rows, err = s.q.Query(ctx, queueTargetsQuery)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	defer rows.Close()
	var out []pendingTarget
	for rows.Next() {
		var t pendingTarget
		if err := rows.Scan(&t.target, &t.next); err != nil {
			return nil, fmt.Errorf("mailbridge: read spool: %w", err)
		}
		if !full[t.target] {
			out = append(out, t)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	return out, nil
}

// selectDue reads deliveries with their mails.
const selectDue = `SELECT d.spool_id, d.target, d.recipient, d.create_spec, d.recheck, d.attempts, m.mail_from, m.received_at, m.message
	FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id`

// claimTargetQuery reads the next deliveries due of one target ($1) at $2, at most $3, in the
// order of the queue index.
const claimTargetQuery = selectDue + ` WHERE d.state = 0 AND d.target = $1 AND d.next_attempt <= $2
	ORDER BY d.next_attempt, d.spool_id LIMIT $3`

// claim takes up to limit pending deliveries due at now that no other instance holds, for
// this instance until now plus the lease. Rooms are taken in the order of their names, and
// each room's deliveries in the order they are due, the oldest mail first among those due
// alike (a mail is due when it is spooled); rooms with refillBelow or more posts unsent are
// left out. So each claim costs the rooms with mail waiting and the batch it takes, not the
// backlog: a drain of thousands of mails into one room claims a batch in a few probes of the
// queue index.
func (s *spool) claim(ctx context.Context, now time.Time, limit int) ([]delivery, error) {
	if !s.claims.postgres {
		targets, err := s.queueTargets(ctx)
		if err != nil {
			return nil, err
		}
		var out []delivery
		for _, t := range targets {
			if len(out) == limit {
				break
			}
			if t.next > now.UnixMilli() {
				continue
			}
			got, err := s.scanDeliveries(s.q.Query(ctx, claimTargetQuery, t.target, now.UnixMilli(), limit-len(out)))
			if err != nil {
				return nil, err
			}
			out = append(out, got...)
		}
		return out, nil
	}
	until := now.Add(s.claims.lease).UnixMilli()
	var out []delivery
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		out = nil
		targets, err := s.queueTargets(ctx)
		if err != nil {
			return err
		}
		type key struct {
			id     int64
			target string
		}
		var keys []key
		for _, t := range targets {
			if len(keys) == limit {
				break
			}
			if t.next > now.UnixMilli() {
				continue
			}
			rows, err := s.db.Query(ctx, `SELECT spool_id, target FROM samtal_mail_delivery
				WHERE state = 0 AND target = $1 AND next_attempt <= $2 AND claimed_until <= $2
				ORDER BY next_attempt, spool_id LIMIT $3 FOR UPDATE SKIP LOCKED`, t.target, now.UnixMilli(), limit-len(keys))
			if err != nil {
				return err
			}
			for rows.Next() {
				var k key
				if err := rows.Scan(&k.id, &k.target); err != nil {
					rows.Close()
					return err
				}
				keys = append(keys, k)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if _, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET claimed_by = $1, claimed_until = $2 WHERE spool_id = $3 AND target = $4`,
				s.claims.holder, until, k.id, k.target); err != nil {
				return err
			}
		}
		for _, k := range keys {
			got, err := s.scanDeliveries(s.db.Query(ctx, selectDue+` WHERE d.spool_id = $1 AND d.target = $2`, k.id, k.target))
			if err != nil {
				return err
			}
			out = append(out, got...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailbridge: claim spooled mail: %w", err)
	}
	return out, nil
}

// scanDeliveries reads the rows of a delivery query.
func (s *spool) scanDeliveries(rows dbutil.Rows, err error) ([]delivery, error) {
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	defer rows.Close()
	var out []delivery
	for rows.Next() {
		var d delivery
		var received int64
		if err := rows.Scan(&d.spoolID, &d.target, &d.recipient, &d.createSpec, &d.recheck, &d.attempts, &d.mailFrom, &received, &d.message); err != nil {
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
