package identity

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema_oauth/*.sql
var oauthSchemaFS embed.FS

var oauthUpgrades = dbutil.BuildUpgradeTable().WithFSPath(oauthSchemaFS, "schema_oauth").Finish()

// oauthVersionTable records the schema version of the OAuth tables in the shared database.
const oauthVersionTable = "samtal_identity_oauth_version"

// oauthRecord is an OAuth 2.0 session as stored: the client it was issued to, where to
// refresh it, and its current tokens. The database is the one matrix.OpenDatabase opened,
// which keeps its file readable by its owner only.
type oauthRecord struct {
	ClientID      string
	TokenEndpoint string
	Revocation    string
	AccessToken   string
	LoginToken    string // the access token the login issued, which matrix.Session keeps
	RefreshToken  string
	ExpiresAt     time.Time
	Generation    int64
}

type tokenStore struct{ db *dbutil.Database }

func openTokenStore(ctx context.Context, db *dbutil.Database) (*tokenStore, error) {
	if db == nil {
		return nil, errors.New("identity: a database is required (matrix.OpenDatabase)")
	}
	child := db.Child(oauthVersionTable, oauthUpgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("identity: upgrade database schema: %w", err)
	}
	return &tokenStore{child}, nil
}

func (s *tokenStore) load(ctx context.Context, name string) (*oauthRecord, error) {
	var r oauthRecord
	var exp int64
	err := s.db.QueryRow(ctx, `SELECT client_id, token_endpoint, revocation, access_token, login_token, refresh_token, expires_at, generation
		FROM samtal_identity_oauth WHERE name = $1`, name).
		Scan(&r.ClientID, &r.TokenEndpoint, &r.Revocation, &r.AccessToken, &r.LoginToken, &r.RefreshToken, &exp, &r.Generation)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: load OAuth session %q: %w", name, err)
	}
	if exp > 0 {
		r.ExpiresAt = time.UnixMilli(exp)
	}
	return &r, nil
}

// save stores a new login's session, replacing what was stored under name.
func (s *tokenStore) save(ctx context.Context, name string, r *oauthRecord) error {
	_, err := s.db.Exec(ctx, `INSERT INTO samtal_identity_oauth
		(name, client_id, token_endpoint, revocation, access_token, login_token, refresh_token, expires_at, generation)
		VALUES ($1, $2, $3, $4, $5, $5, $6, $7, 0)
		ON CONFLICT (name) DO UPDATE SET client_id = excluded.client_id, token_endpoint = excluded.token_endpoint,
			revocation = excluded.revocation, access_token = excluded.access_token, login_token = excluded.login_token,
			refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
			generation = samtal_identity_oauth.generation + 1, lease_holder = '', lease_until = 0`,
		name, r.ClientID, r.TokenEndpoint, r.Revocation, r.AccessToken, r.RefreshToken, unixMilli(r.ExpiresAt))
	if err != nil {
		return fmt.Errorf("identity: save OAuth session %q: %w", name, err)
	}
	oauthSaves.Add(1)
	return nil
}

// oauthSaves counts the OAuth sessions this process stored, so that a Transport that found
// none stored looks again after a login.
var oauthSaves atomic.Int64

// lease makes holder the one process that refreshes name's tokens until until, unless another
// holds an unexpired lease. The refresh request itself runs outside any transaction.
func (s *tokenStore) lease(ctx context.Context, name, holder string, now time.Time, d time.Duration) (bool, error) {
	res, err := s.db.Exec(ctx, `UPDATE samtal_identity_oauth SET lease_holder = $2, lease_until = $3
		WHERE name = $1 AND (lease_holder = '' OR lease_holder = $2 OR lease_until < $4)`,
		name, holder, now.Add(d).UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("identity: lease OAuth session %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// rotate stores the tokens a refresh of generation gen gave, if holder still holds the lease.
func (s *tokenStore) rotate(ctx context.Context, name, holder string, gen int64, access, refresh string, expires time.Time) (bool, error) {
	res, err := s.db.Exec(ctx, `UPDATE samtal_identity_oauth SET access_token = $4, refresh_token = $5, expires_at = $6,
			generation = generation + 1, lease_holder = '', lease_until = 0
		WHERE name = $1 AND lease_holder = $2 AND generation = $3`,
		name, holder, gen, access, refresh, unixMilli(expires))
	if err != nil {
		return false, fmt.Errorf("identity: store rotated tokens of %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *tokenStore) release(ctx context.Context, name, holder string) error {
	_, err := s.db.Exec(ctx, `UPDATE samtal_identity_oauth SET lease_holder = '', lease_until = 0
		WHERE name = $1 AND lease_holder = $2`, name, holder)
	return err
}

func (s *tokenStore) delete(ctx context.Context, name string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM samtal_identity_oauth WHERE name = $1`, name)
	return err
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
