// Package storage opens the one database a samtal deployment shares between its packages.
//
// A deployment names its database once, as a SQLite file path or a postgres:// URL, and every
// component (the matrix outbox and session, the e2ee crypto store, the mail spool) receives the
// same *dbutil.Database. Each package keeps its own version table through Database.Child, so
// their migrations never interfere.
//
// SQLite is the pure-Go modernc.org/sqlite driver: samtal builds without cgo.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
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
func Open(ctx context.Context, dsn string) (*dbutil.Database, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, ErrEmptyDSN
	}
	var (
		db  *dbutil.Database
		err error
	)
	if IsPostgres(dsn) {
		db, err = dbutil.NewWithDialect(dsn, "postgres")
	} else {
		var uri string
		uri, err = sqliteURI(dsn)
		if err == nil {
			db, err = dbutil.NewWithDialect(uri, "sqlite")
		}
		if err == nil {
			// One writer at a time is what SQLite allows; a small pool keeps readers going
			// while the busy timeout queues writers.
			db.RawDB.SetMaxOpenConns(4)
			db.RawDB.SetMaxIdleConns(4)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", Redact(dsn), err)
	}
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

// sqliteURI turns a path or file: URI into a modernc.org/sqlite DSN with our pragmas.
func sqliteURI(dsn string) (string, error) {
	path, query, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	if path == "" {
		return "", fmt.Errorf("empty SQLite path")
	}
	if path != ":memory:" {
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return "", fmt.Errorf("create directory for SQLite file: %w", err)
			}
		}
		// The database holds access tokens and (pickled) keys: readable by its owner only.
		// SQLite gives its -wal and -shm files the same mode.
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
		if err != nil {
			return "", fmt.Errorf("create SQLite file: %w", err)
		}
		f.Close()
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("parse SQLite options %q: %w", query, err)
	}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeoutMS))
	q.Add("_pragma", "synchronous(FULL)")
	if q.Get("_txlock") == "" {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode(), nil
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
