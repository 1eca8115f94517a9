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

// OpenDatabase opens the database a deployment shares between samtal's packages: a SQLite
// file path (created if missing) or a postgres:// URL. Open it once and hand it to every
// component; each keeps its own tables and migrations in it.
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
