package e2ee

import (
	"context"
	"testing"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/crypto/sql_store_upgrade"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/samtalhq/samtal/internal/storage/storagetest"
)

// TestSchemaUpgradeRace: several instances (goroutines with pools of their own, and other
// processes) open one fresh database at the same moment and bring up what Enable needs:
// mautrix's crypto and state stores, then this package's tables. Every one succeeds, and each
// version is recorded once. Before, mautrix's upgrades (and ours) ran with no lock, and all but
// one instance failed.
func TestSchemaUpgradeRace(t *testing.T) {
	storagetest.UpgradeRace(t, func(ctx context.Context, db *dbutil.Database) error {
		if err := upgradeMautrixStores(ctx, db, sqlstatestore.NewSQLStateStore(db, dbutil.NoopLogger, false)); err != nil {
			return err
		}
		_, err := upgradeDB(ctx, db)
		return err
	},
		storagetest.Version{Table: sql_store_upgrade.VersionTableName, Want: len(sql_store_upgrade.Table)},
		storagetest.Version{Table: sqlstatestore.VersionTableName, Want: len(sqlstatestore.UpgradeTable)},
		storagetest.Version{Table: versionTable, Want: len(upgrades)})
}
