package storage

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// SecureDelete makes SQLite overwrite, with zeros, what the rest of ctx's transaction deletes or
// shrinks, so that deleted content is not left readable in free space of the database file. It
// is a setting of the connection and stays on for it. Call it inside a transaction
// (dbutil.Database.DoTxn), so that it applies to the connection that deletes. On PostgreSQL it
// does nothing: deleted rows are left to VACUUM.
func SecureDelete(ctx context.Context, db *dbutil.Database) error {
	if db.Dialect != dbutil.SQLite {
		return nil
	}
	if _, err := db.Exec(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return fmt.Errorf("storage: secure delete: %w", err)
	}
	return nil
}

// TruncateWait is the wait for TruncateWAL of a caller that tries again later (a periodic
// sweep): short, since new writers wait for it meanwhile.
const TruncateWait = 200 * time.Millisecond

// TruncateWAL copies SQLite's write-ahead log into the database file and empties the log, so
// that the pages a secure delete overwrote are gone from the log as well: until then the log
// holds them as they were, deleted content included. It waits at most wait for readers of an
// older snapshot and for a writer (new writers wait for it meanwhile, so keep wait short), and
// reports whether the log was emptied; when it was not, call it again later. On PostgreSQL it
// does nothing and reports true.
func TruncateWAL(ctx context.Context, db *dbutil.Database, wait time.Duration) (bool, error) {
	if db.Dialect != dbutil.SQLite {
		return true, nil
	}
	conn, err := db.RawDB.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("storage: truncate WAL: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, max(wait.Milliseconds(), 1))); err != nil {
		return false, fmt.Errorf("storage: truncate WAL: %w", err)
	}
	var busy, logFrames, checkpointed int
	err = conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &checkpointed)
	if _, resetErr := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, sqliteBusyTimeoutMS)); resetErr != nil {
		// A connection left with the short timeout would make the pool's writers fail early:
		// it is closed instead of going back to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		if err == nil {
			err = resetErr
		}
	}
	if isBusy(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: truncate WAL: %w", err)
	}
	return busy == 0, nil
}
