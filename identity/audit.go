package identity

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_identity_version"

// AuditEntry is one row of the offboarding audit log: who did what to whom, why, when, and how
// it went.
type AuditEntry struct {
	ID      int64     `json:"id"`
	RunID   string    `json:"run_id"`
	At      time.Time `json:"at"`
	Actor   id.UserID `json:"actor"`
	Action  string    `json:"action"`
	Target  id.UserID `json:"target"`
	Room    id.RoomID `json:"room,omitempty"`
	Reason  string    `json:"reason"`
	Source  string    `json:"source"`
	Outcome string    `json:"outcome"` // "ok" or "failed"
	Status  int       `json:"status,omitempty"`
	ErrCode string    `json:"errcode,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// AuditLog is the append-only log of the Reconciler's actions, in the shared database (table
// samtal_identity_audit; the database refuses to change or delete its rows).
type AuditLog struct {
	db *dbutil.Database
}

// OpenAuditLog brings this package's tables in db up to date and returns the audit log.
func OpenAuditLog(ctx context.Context, db *dbutil.Database) (*AuditLog, error) {
	if db == nil {
		return nil, errors.New("identity: OpenAuditLog needs a database (matrix.OpenDatabase)")
	}
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("identity: upgrade database schema: %w", err)
	}
	return &AuditLog{db: child}, nil
}

// Append adds an entry; its ID and, when zero, its time are set.
func (l *AuditLog) Append(ctx context.Context, e *AuditEntry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	err := l.db.QueryRow(ctx, `INSERT INTO samtal_identity_audit
		(run_id, at, actor, action, target, room_id, reason, source, outcome, status, errcode, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id`,
		e.RunID, e.At.UnixMilli(), e.Actor, e.Action, e.Target, e.Room, e.Reason, e.Source, e.Outcome,
		e.Status, e.ErrCode, e.Error).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("identity: append to the audit log: %w", err)
	}
	return nil
}

// AuditFilter selects entries; the zero value selects the last 100.
type AuditFilter struct {
	Target id.UserID // only this user
	RunID  string    // only this run
	Limit  int       // 0 means 100
}

// List returns entries, oldest first.
func (l *AuditLog) List(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := l.db.Query(ctx, `SELECT id, run_id, at, actor, action, target, room_id, reason, source, outcome, status, errcode, error
		FROM samtal_identity_audit WHERE ($1 = '' OR target = $1) AND ($2 = '' OR run_id = $2)
		ORDER BY id DESC LIMIT $3`, f.Target, f.RunID, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("identity: read the audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &e.RunID, &at, &e.Actor, &e.Action, &e.Target, &e.Room, &e.Reason, &e.Source,
			&e.Outcome, &e.Status, &e.ErrCode, &e.Error); err != nil {
			return nil, fmt.Errorf("identity: read the audit log: %w", err)
		}
		e.At = time.UnixMilli(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: read the audit log: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// done reports whether action on target succeeded before (in any run).
func (l *AuditLog) done(ctx context.Context, action string, target id.UserID) (bool, error) {
	var n int
	err := l.db.QueryRow(ctx, `SELECT COUNT(*) FROM samtal_identity_audit WHERE target = $1 AND action = $2 AND outcome = 'ok'`,
		target, action).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("identity: read the audit log: %w", err)
	}
	return n > 0, nil
}
