package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Session is a logged-in device: who, on which homeserver, with which tokens. It is stored in
// the database so that a restarted process continues as the same device, which keeps its
// transaction IDs (and, with e2ee, its keys) meaningful.
type Session struct {
	HomeserverURL string
	UserID        id.UserID
	DeviceID      id.DeviceID
	AccessToken   string
	RefreshToken  string    // empty unless the login issued one (OAuth 2.0, refreshable tokens)
	ExpiresAt     time.Time // zero when the access token does not expire
}

type sessionStore struct {
	db *dbutil.Database
}

func (s sessionStore) load(ctx context.Context, name string) (*Session, error) {
	var sess Session
	var expires int64
	err := s.db.QueryRow(ctx, `SELECT homeserver_url, user_id, device_id, access_token, refresh_token, expires_at
		FROM samtal_session WHERE name = $1`, name).
		Scan(&sess.HomeserverURL, &sess.UserID, &sess.DeviceID, &sess.AccessToken, &sess.RefreshToken, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("matrix: load session %q: %w", name, err)
	}
	if expires > 0 {
		sess.ExpiresAt = time.UnixMilli(expires)
	}
	return &sess, nil
}

func (s sessionStore) save(ctx context.Context, name string, sess *Session) error {
	var expires int64
	if !sess.ExpiresAt.IsZero() {
		expires = sess.ExpiresAt.UnixMilli()
	}
	_, err := s.db.Exec(ctx, `INSERT INTO samtal_session (name, homeserver_url, user_id, device_id, access_token, refresh_token, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (name) DO UPDATE SET homeserver_url = excluded.homeserver_url, user_id = excluded.user_id,
			device_id = excluded.device_id, access_token = excluded.access_token,
			refresh_token = excluded.refresh_token, expires_at = excluded.expires_at`,
		name, sess.HomeserverURL, sess.UserID, sess.DeviceID, sess.AccessToken, sess.RefreshToken, expires)
	if err != nil {
		return fmt.Errorf("matrix: save session %q: %w", name, err)
	}
	return nil
}

func (s sessionStore) delete(ctx context.Context, name string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM samtal_session WHERE name = $1`, name)
	return err
}
