package e2ee

import (
	"context"
	"embed"
	"fmt"

	"go.mau.fi/util/dbutil"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_e2ee_version"

// upgradeDB brings this package's own tables up to date (mautrix's crypto store keeps its own).
func upgradeDB(ctx context.Context, db *dbutil.Database) (*dbutil.Database, error) {
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("e2ee: upgrade database schema: %w", err)
	}
	return child, nil
}
