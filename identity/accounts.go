package identity

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema_accounts/*.sql
var accountsSchemaFS embed.FS

var accountsUpgrades = dbutil.BuildUpgradeTable().WithFSPath(accountsSchemaFS, "schema_accounts").Finish()

// accountsVersionTable records the schema version of the claim mapping's table.
const accountsVersionTable = "samtal_identity_accounts_version"

// DBAccounts is an Accounts in the shared database (table samtal_identity_accounts), for a
// Mapper whose mapping must survive a restart and be shared by several instances. The
// database enforces that a localpart has one holder and a subject one localpart: of two
// instances mapping two people to the same localpart at once, one gets it and the other's
// Claim reports false.
type DBAccounts struct {
	db  *dbutil.Database
	now func() time.Time
}

// OpenAccounts brings the claim mapping's table in db (from matrix.OpenDatabase: SQLite or
// PostgreSQL) up to date and returns it.
func OpenAccounts(ctx context.Context, db *dbutil.Database) (*DBAccounts, error) {
	if db == nil {
		return nil, errors.New("identity: OpenAccounts needs a database (matrix.OpenDatabase)")
	}
	child := db.Child(accountsVersionTable, accountsUpgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("identity: upgrade database schema: %w", err)
	}
	return &DBAccounts{db: child, now: time.Now}, nil
}

// Lookup implements Accounts.
func (a *DBAccounts) Lookup(ctx context.Context, subject string) (string, error) {
	var lp string
	err := a.db.QueryRow(ctx, `SELECT localpart FROM samtal_identity_accounts WHERE subject = $1`, subject).Scan(&lp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("identity: look up the account of a subject: %w", err)
	}
	return lp, nil
}

// Claim implements Accounts. The insert is the decision: a second subject's insert of a held
// localpart (or a second localpart for a subject) does nothing, whichever instance made it.
func (a *DBAccounts) Claim(ctx context.Context, localpart, subject string) (bool, error) {
	res, err := a.db.Exec(ctx, `INSERT INTO samtal_identity_accounts (subject, localpart, claimed_at)
		VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, subject, localpart, a.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("identity: claim localpart %q: %w", localpart, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return true, nil
	}
	var owner string
	err = a.db.QueryRow(ctx, `SELECT subject FROM samtal_identity_accounts WHERE localpart = $1`, localpart).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil // the subject holds another localpart
	}
	if err != nil {
		return false, fmt.Errorf("identity: owner of localpart %q: %w", localpart, err)
	}
	return owner == subject, nil
}
