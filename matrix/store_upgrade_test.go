package matrix

import (
	"context"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage/storagetest"
)

// TestSchemaUpgradeRace: several instances (goroutines with pools of their own, and other
// processes) open one fresh database at the same moment; every one brings the matrix tables
// up, and the version is recorded once. Before, two of them created the version table or ran
// the first step at once, and one failed.
func TestSchemaUpgradeRace(t *testing.T) {
	storagetest.UpgradeRace(t, func(ctx context.Context, db *dbutil.Database) error {
		_, err := upgradeDB(ctx, db)
		return err
	}, storagetest.Version{Table: versionTable, Want: len(upgrades)})
}
