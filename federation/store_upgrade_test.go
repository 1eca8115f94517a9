package federation

import (
	"context"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/internal/storage/storagetest"
)

// TestSchemaUpgradeRace: several instances open one fresh database at the same moment and
// bring the federation audit table up as NewReconciler does; every one succeeds, and the
// version is recorded once.
func TestSchemaUpgradeRace(t *testing.T) {
	storagetest.UpgradeRace(t, func(ctx context.Context, db *dbutil.Database) error {
		return storage.Upgrade(ctx, db.Child(versionTable, upgrades, dbutil.NoopLogger))
	}, storagetest.Version{Table: versionTable, Want: len(upgrades)})
}
