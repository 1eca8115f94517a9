package storage

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
)

// The advisory lock that schema upgrades take on PostgreSQL, in the two-key form so that it
// never meets a lock taken with one bigint key (the mail gateway's IMAP pollers use those):
// "samt" and 1.
const (
	upgradeLockClass = 0x73616d74
	upgradeLockID    = 1
)

// Upgrade brings the tables of db, a dbutil.Database.Child with its version table and
// upgrade table, up to date, safely while other instances start on the same database.
//
// dbutil's own Upgrade reads the version and creates the version table outside any lock, and
// runs each step in a transaction of its own: two instances starting at once on a fresh
// database both run the first step, and one fails on a table that already exists or leaves
// two version rows. Here the whole upgrade is one transaction. On PostgreSQL it begins with a
// transaction-level advisory lock, shared by every samtal schema (one package's tables may
// refer to another's), so that a second instance waits, then reads the version the first
// committed and has nothing left to do; a failed upgrade leaves nothing behind. On SQLite the
// transaction begins IMMEDIATE (Open's default), which takes the database's write lock at
// once: another connection or process waits for it (the busy timeout) and then finds the
// tables made.
//
// An upgrade step that must not run in a transaction ("-- transaction: off" for CREATE INDEX
// CONCURRENTLY, or "sqlite-fkey-off", which needs a connection of its own) cannot be used
// with Upgrade: samtal's schemas and mautrix's crypto and state stores have none.
func Upgrade(ctx context.Context, db *dbutil.Database) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if db.Dialect == dbutil.Postgres {
			if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, upgradeLockClass, upgradeLockID); err != nil {
				return fmt.Errorf("take the schema upgrade lock: %w", err)
			}
		}
		// The steps' own transactions join this one: a Child shares its parent's.
		return db.Upgrade(ctx)
	})
}
