package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/samtalhq/samtal/internal/backoff"
)

// openSQLite creates the file if it is missing and opens it with our pragmas.
//
// A plain path is a path, whatever it holds: it is escaped for the file: URI the driver is given
// ('%', '?' and '#' mean something there). A file: URI is one: its path is percent-decoded for
// the file system, and its query holds options.
func openSQLite(ctx context.Context, dsn string) (*dbutil.Database, error) {
	path, query := dsn, ""
	if rest, ok := strings.CutPrefix(dsn, "file:"); ok {
		var raw string
		raw, query, _ = strings.Cut(rest, "?")
		raw, _, _ = strings.Cut(raw, "#")
		var err error
		if path, err = url.PathUnescape(raw); err != nil {
			return nil, fmt.Errorf("storage: open %s: SQLite URI path: %w", dsn, err)
		}
	}
	if path == "" {
		return nil, fmt.Errorf("storage: open %s: empty SQLite path", dsn)
	}
	uri, err := sqliteURI(path, query)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dsn, err)
	}
	if path != ":memory:" {
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("storage: open %s: create directory for SQLite file: %w", dsn, err)
			}
		}
		if err := createPrivate(path); err != nil {
			return nil, fmt.Errorf("storage: open %s: %w", dsn, err)
		}
	}
	db, err := dbutil.NewWithDialect(uri, "sqlite")
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dsn, err)
	}
	// One writer at a time is what SQLite allows; a small pool keeps readers going while the
	// busy timeout queues writers.
	db.RawDB.SetMaxOpenConns(4)
	db.RawDB.SetMaxIdleConns(4)
	if err := pingSQLite(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: connect to %s: %w", dsn, err)
	}
	return db, nil
}

// pingSQLite opens the first connection, which runs the pragmas. Turning a new file to WAL
// while other connections (other pools, other processes) do the same can deadlock on the
// file's lock, and SQLite then answers SQLITE_BUSY at once to one of them rather than wait the
// busy timeout: that is tried again, with a short pause, for as long as the busy timeout.
func pingSQLite(ctx context.Context, db *dbutil.Database) error {
	deadline := time.Now().Add(sqliteBusyTimeoutMS * time.Millisecond)
	pause := 5 * time.Millisecond
	for {
		err := db.RawDB.PingContext(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		if !backoff.Sleep(ctx, pause+time.Duration(rand.Int64N(int64(pause)))) {
			return err
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (any of its extended codes).
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// createMu keeps SQLite from opening a file in this process while createPrivate holds a
// descriptor of it (process-wide, as the locks it protects are).
var createMu sync.Mutex

// createPrivate creates the database file, readable by its owner only: it holds access tokens
// and (pickled) keys, and SQLite gives its -wal and -shm files the same mode.
//
// A file that is there already is not opened here: closing a descriptor of it drops every
// lock SQLite holds on the file in this process (POSIX locks belong to the process, not to the
// descriptor), and another pool's writer then runs unprotected. Several instances opening a
// new database at once failed that way ("disk I/O error"). createMu covers the moment between
// creating the file and closing its descriptor, in which another Open could reach SQLite.
func createPrivate(path string) error {
	createMu.Lock()
	defer createMu.Unlock()
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create SQLite file: %w", err)
	}
	return f.Close()
}

// sqliteURI turns a path and its options into a modernc.org/sqlite DSN with our pragmas.
func sqliteURI(path, query string) (string, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("parse SQLite options %q: %w", query, err)
	}
	// The busy timeout first: the pragmas run in this order on every new connection, and
	// journal_mode needs a lock that another process's open or upgrade may hold (a second
	// instance opening a fresh file failed at once with SQLITE_BUSY).
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeoutMS))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if q.Get("_txlock") == "" {
		q.Set("_txlock", "immediate")
	}
	return "file:" + uriPath.Replace(path) + "?" + q.Encode(), nil
}

// uriPath escapes what a file: URI's path cannot hold as it is.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")
