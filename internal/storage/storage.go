// Package storage opens the one database a samtal deployment shares between its packages.
//
// A deployment names its database once, as a SQLite file path or a postgres:// URL, and every
// component (the matrix outbox and session, the e2ee crypto store, the mail spool) receives the
// same *dbutil.Database. Each package keeps its own version table through Database.Child, so
// their migrations never interfere, and runs them with Upgrade, so that instances starting at
// once on one database take turns.
//
// SQLite is the pure-Go modernc.org/sqlite driver: samtal builds without cgo.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	_ "github.com/lib/pq" // registers the "postgres" driver
	"go.mau.fi/util/dbutil"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrEmptyDSN is returned by Open when no database was named.
var ErrEmptyDSN = errors.New("storage: no database named (want a SQLite file path or a postgres:// URL)")

// sqliteBusyTimeoutMS is how long a SQLite connection waits for a lock held by another
// connection before giving up with SQLITE_BUSY.
const sqliteBusyTimeoutMS = 10000

// Open opens the database named by dsn and checks that it answers.
//
// A dsn starting with postgres:// or postgresql:// opens PostgreSQL. Anything else is a SQLite
// file path (or a file: URI), created if missing, opened in WAL mode with foreign keys on, a busy
// timeout, and immediate write transactions so that concurrent writers queue instead of failing.
//
// A PostgreSQL database holds at most DefaultMaxConns connections; more work waits for one in
// the pool. The URL parameters pool_max_conns (a number), pool_max_conn_idle_time and
// pool_max_conn_lifetime (durations such as 5m; 0 means no limit) change that; Open takes them
// out of the URL before it connects. A bad value gives an error matching ErrInvalidDSN.
func Open(ctx context.Context, dsn string) (*dbutil.Database, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, ErrEmptyDSN
	}
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn)
	}
	return openSQLite(ctx, dsn)
}

// openPostgres opens the pool and checks that the server answers.
func openPostgres(ctx context.Context, dsn string) (*dbutil.Database, error) {
	conn, limits, err := poolParams(dsn)
	if err != nil {
		return nil, err
	}
	db, err := dbutil.NewWithDialect(conn, "postgres")
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", Redact(dsn), err)
	}
	limits.apply(db.RawDB)
	if err := db.RawDB.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: connect to %s: %w", Redact(dsn), err)
	}
	return db, nil
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Redact hides the password of a PostgreSQL URL, in its user part or its query, so that the
// URL can be shown in errors and logs. Other DSNs are returned unchanged.
func Redact(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparseable)"
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
