package identity

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/storage"
)

//go:embed schema_offboard/*.sql
var offboardSchemaFS embed.FS

var offboardUpgrades = dbutil.BuildUpgradeTable().WithFSPath(offboardSchemaFS, "schema_offboard").Finish()

// offboardVersionTable records the schema version of the offboarding state tables.
const offboardVersionTable = "samtal_identity_offboard_version"

// offboardDB brings the offboarding state tables up to date on first use, with the context of
// that use (the handlers' constructors take none); a failed upgrade is tried again next time.
// The lock is held across that one upgrade, as sync.Once would: requests that come meanwhile
// need the tables too.
type offboardDB struct {
	mu    sync.Mutex
	raw   *dbutil.Database
	child *dbutil.Database
}

func (o *offboardDB) get(ctx context.Context) (*dbutil.Database, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.child != nil {
		return o.child, nil
	}
	child := o.raw.Child(offboardVersionTable, offboardUpgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, child); err != nil {
		return nil, fmt.Errorf("identity: upgrade the offboarding tables: %w", err)
	}
	o.child = child
	return child, nil
}

// scimStore keeps SCIM users: in memory, or in the shared database.
type scimStore interface {
	// create stores u, unless its userName is taken (false).
	create(ctx context.Context, u *SCIMUser) (bool, error)
	// get returns the user rid, or nil.
	get(ctx context.Context, rid string) (*SCIMUser, error)
	list(ctx context.Context) ([]SCIMUser, error)
	// setActive sets the user's active flag and returns the user, or nil when absent.
	setActive(ctx context.Context, rid string, active bool) (*SCIMUser, error)
	remove(ctx context.Context, rid string) error
}

// memorySCIM is the store of a SCIM handler without a database.
type memorySCIM struct {
	mu    sync.Mutex
	users map[string]*SCIMUser
}

func (m *memorySCIM) create(_ context.Context, u *SCIMUser) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, other := range m.users {
		if other.UserName == u.UserName {
			return false, nil
		}
	}
	c := *u
	m.users[u.ID] = &c
	return true, nil
}

func (m *memorySCIM) get(_ context.Context, rid string) (*SCIMUser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[rid]
	if !ok {
		return nil, nil
	}
	c := *u
	return &c, nil
}

func (m *memorySCIM) list(context.Context) ([]SCIMUser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SCIMUser, 0, len(m.users))
	for _, u := range m.users {
		out = append(out, *u)
	}
	return out, nil
}

func (m *memorySCIM) setActive(_ context.Context, rid string, active bool) (*SCIMUser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[rid]
	if !ok {
		return nil, nil
	}
	u.Active = active
	c := *u
	return &c, nil
}

func (m *memorySCIM) remove(_ context.Context, rid string) error {
	m.mu.Lock()
	delete(m.users, rid)
	m.mu.Unlock()
	return nil
}

// dbSCIM keeps SCIM users in samtal_identity_scim_user, which every instance sharing the
// database reads.
type dbSCIM struct{ db *offboardDB }

const scimColumns = `id, user_name, external_id, active, emails, matrix_id`

func (s *dbSCIM) create(ctx context.Context, u *SCIMUser) (bool, error) {
	db, err := s.db.get(ctx)
	if err != nil {
		return false, err
	}
	emails, err := json.Marshal(u.Emails)
	if err != nil {
		return false, err
	}
	res, err := db.Exec(ctx, `INSERT INTO samtal_identity_scim_user (`+scimColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_name) DO NOTHING`, u.ID, u.UserName, u.ExternalID, u.Active, string(emails), string(u.MatrixID))
	if err != nil {
		return false, fmt.Errorf("identity: store SCIM user: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func scanSCIM(row dbutil.Scannable) (*SCIMUser, error) {
	var u SCIMUser
	var emails, matrixID string
	if err := row.Scan(&u.ID, &u.UserName, &u.ExternalID, &u.Active, &emails, &matrixID); err != nil {
		return nil, err
	}
	if emails != "" {
		if err := json.Unmarshal([]byte(emails), &u.Emails); err != nil {
			return nil, fmt.Errorf("identity: stored emails of SCIM user %s: %w", u.ID, err)
		}
	}
	u.MatrixID = id.UserID(matrixID)
	u.Schemas = []string{scimUserSchema}
	return &u, nil
}

func (s *dbSCIM) get(ctx context.Context, rid string) (*SCIMUser, error) {
	db, err := s.db.get(ctx)
	if err != nil {
		return nil, err
	}
	u, err := scanSCIM(db.QueryRow(ctx, `SELECT `+scimColumns+` FROM samtal_identity_scim_user WHERE id = $1`, rid))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read SCIM user: %w", err)
	}
	return u, nil
}

func (s *dbSCIM) list(ctx context.Context) ([]SCIMUser, error) {
	db, err := s.db.get(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT `+scimColumns+` FROM samtal_identity_scim_user ORDER BY user_name`)
	if err != nil {
		return nil, fmt.Errorf("identity: list SCIM users: %w", err)
	}
	defer rows.Close()
	var out []SCIMUser
	for rows.Next() {
		u, err := scanSCIM(rows)
		if err != nil {
			return nil, fmt.Errorf("identity: list SCIM users: %w", err)
		}
		out = append(out, *u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list SCIM users: %w", err)
	}
	return out, nil
}

func (s *dbSCIM) setActive(ctx context.Context, rid string, active bool) (*SCIMUser, error) {
	db, err := s.db.get(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(ctx, `UPDATE samtal_identity_scim_user SET active = $2 WHERE id = $1`, rid, active); err != nil {
		return nil, fmt.Errorf("identity: update SCIM user: %w", err)
	}
	return s.get(ctx, rid)
}

func (s *dbSCIM) remove(ctx context.Context, rid string) error {
	db, err := s.db.get(ctx)
	if err != nil {
		return err
	}
	if _, err := db.Exec(ctx, `DELETE FROM samtal_identity_scim_user WHERE id = $1`, rid); err != nil {
		return fmt.Errorf("identity: delete SCIM user: %w", err)
	}
	return nil
}

// jtiStore remembers the IDs of accepted logout tokens until they may be forgotten.
type jtiStore interface {
	// remember records (issuer, jti) until until, and reports false when it was recorded
	// already and not yet expired. Expired records are dropped.
	remember(ctx context.Context, issuer, jti string, now, until time.Time) (bool, error)
	forget(ctx context.Context, issuer, jti string) error
}

type memoryJTI struct {
	mu   sync.Mutex
	seen map[[2]string]time.Time
}

func (m *memoryJTI) remember(_ context.Context, issuer, jti string, now, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, u := range m.seen {
		if now.After(u) {
			delete(m.seen, k)
		}
	}
	k := [2]string{issuer, jti}
	if _, dup := m.seen[k]; dup {
		return false, nil
	}
	m.seen[k] = until
	return true, nil
}

func (m *memoryJTI) forget(_ context.Context, issuer, jti string) error {
	m.mu.Lock()
	delete(m.seen, [2]string{issuer, jti})
	m.mu.Unlock()
	return nil
}

// dbJTI keeps seen token IDs in samtal_identity_logout_jti: a restart forgets none, and every
// instance sharing the database refuses a token another one accepted.
type dbJTI struct{ db *offboardDB }

func (s *dbJTI) remember(ctx context.Context, issuer, jti string, now, until time.Time) (bool, error) {
	db, err := s.db.get(ctx)
	if err != nil {
		return false, err
	}
	if _, err := db.Exec(ctx, `DELETE FROM samtal_identity_logout_jti WHERE expires_at < $1`, now.UnixMilli()); err != nil {
		return false, fmt.Errorf("identity: expire seen logout tokens: %w", err)
	}
	// The primary key decides between two instances that see the same token at once.
	res, err := db.Exec(ctx, `INSERT INTO samtal_identity_logout_jti (issuer, jti, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (issuer, jti) DO NOTHING`, issuer, jti, until.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("identity: record a seen logout token: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *dbJTI) forget(ctx context.Context, issuer, jti string) error {
	db, err := s.db.get(ctx)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `DELETE FROM samtal_identity_logout_jti WHERE issuer = $1 AND jti = $2`, issuer, jti)
	return err
}
