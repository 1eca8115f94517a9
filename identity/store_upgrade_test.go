package identity

import (
	"context"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage/storagetest"
)

// TestSchemaUpgradeRace: several instances (goroutines with pools of their own, and other
// processes) open one fresh database at the same moment and bring up every identity table: the
// audit log, the OAuth sessions, the claim mapping, the offboarding state. Every one succeeds,
// and each version is recorded once. Before, two of them ran the first step at once, and one
// failed.
func TestSchemaUpgradeRace(t *testing.T) {
	storagetest.UpgradeRace(t, func(ctx context.Context, db *dbutil.Database) error {
		if _, err := OpenAuditLog(ctx, db); err != nil {
			return err
		}
		if _, err := openTokenStore(ctx, db); err != nil {
			return err
		}
		if _, err := OpenAccounts(ctx, db); err != nil {
			return err
		}
		_, err := (&offboardDB{raw: db}).get(ctx)
		return err
	},
		storagetest.Version{Table: versionTable, Want: len(upgrades)},
		storagetest.Version{Table: oauthVersionTable, Want: len(oauthUpgrades)},
		storagetest.Version{Table: accountsVersionTable, Want: len(accountsUpgrades)},
		storagetest.Version{Table: offboardVersionTable, Want: len(offboardUpgrades)})
}
