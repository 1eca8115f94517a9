package mailbridge

import (
	"context"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage/storagetest"
)

// TestSchemaUpgradeRace: several gateway instances (goroutines with pools of their own, and
// other processes) open one fresh database at the same moment; every one brings the spool and
// its claims up, and each version is recorded once. Before, two of them ran the first step at
// once, and one failed.
func TestSchemaUpgradeRace(t *testing.T) {
	storagetest.UpgradeRace(t, func(ctx context.Context, db *dbutil.Database) error {
		_, err := openSpool(ctx, db)
		return err
	},
		storagetest.Version{Table: versionTable, Want: len(upgrades)},
		storagetest.Version{Table: claimVersionTable, Want: len(claimUpgrades)})
}
