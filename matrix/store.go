package matrix

import (
	"context"
	"embed"
	"fmt"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_matrix_version"

// ErrInvalidDSN is returned by OpenDatabase when a pool parameter of a PostgreSQL URL has a
// value it cannot use; the error names the parameter.
var ErrInvalidDSN = storage.ErrInvalidDSN

// OpenDatabase opens the database a deployment shares between samtal's packages: a SQLite
// file path (created if missing) or a postgres:// URL. Open it once and hand it to every
// component; each keeps its own tables and migrations in it, brought up to date safely when
// several instances start at once.
//
// A PostgreSQL database is opened with at most 20 connections, so that several instances stay
// within the server's max_connections (100 by default); more work waits for a connection.
// The URL parameters pool_max_conns, pool_max_conn_idle_time (default 5m) and
// pool_max_conn_lifetime (default 1h; 0 means no limit) change that, as in
// postgres://samtal@db/samtal?pool_max_conns=40. A mail gateway's IMAP poller keeps one
// connection for each mailbox it polls.
func OpenDatabase(ctx context.Context, dsn string) (*dbutil.Database, error) {
	return storage.Open(ctx, dsn)
}

// upgradeDB brings this package's tables up to date and returns the database as this package
// uses it.
func upgradeDB(ctx context.Context, db *dbutil.Database) (*dbutil.Database, error) {
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("matrix: upgrade database schema: %w", err)
	}
	return child, nil
}
