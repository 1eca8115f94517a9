package e2ee

import (
	"context"
	"embed"
	"fmt"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/crypto/sql_store_upgrade"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_e2ee_version"

// upgradeDB brings this package's own tables up to date (mautrix's crypto store keeps its own).
func upgradeDB(ctx context.Context, db *dbutil.Database) (*dbutil.Database, error) {
	child := db.Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("e2ee: upgrade database schema: %w", err)
	}
	return child, nil
}

// upgradeMautrixStores brings mautrix's crypto store and, when state is not nil, its state
// store up to date with storage.Upgrade, before cryptohelper.Init runs their upgrades itself
// (with no lock, which two instances starting at once on a fresh database do not survive):
// Init then finds nothing left to do.
func upgradeMautrixStores(ctx context.Context, db *dbutil.Database, state *sqlstatestore.SQLStateStore) error {
	if err := storage.Upgrade(ctx, db.Child(sql_store_upgrade.VersionTableName, sql_store_upgrade.Table, dbutil.NoopLogger)); err != nil {
		return fmt.Errorf("e2ee: upgrade the crypto store's schema: %w", err)
	}
	if state != nil {
		if err := storage.Upgrade(ctx, state.Database); err != nil {
			return fmt.Errorf("e2ee: upgrade the state store's schema: %w", err)
		}
	}
	return nil
}
