package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
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

// ErrSessionInUse is returned by New when the session name (Options.SessionName, or "default")
// holds the stored session of another account than the one Options ask for, by
// Options.UserID or by a Password or AppService login: a session name is one account, whose
// sync position and pending sends it keys. Give each account on a database its own
// SessionName. (A login that names no user, such as LoginToken, cannot be checked before it is
// used, and New uses the stored session.)
var ErrSessionInUse = errors.New("matrix: session name in use by another account")

// namedLogin is a Login that says beforehand which user it logs in: user is a localpart or a
// full user ID, as given to Password or AppService.
type namedLogin struct {
	login Login
	user  string
}

// Login calls the login it names.
func (l namedLogin) Login(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error) {
	return l.login.Login(ctx, hs, deviceName)
}

// checkOwner returns an error matching ErrSessionInUse when opts ask for another user than
// stored, the user of the session stored under name.
func checkOwner(name string, opts Options, stored id.UserID) error {
	if opts.UserID != "" && !strings.EqualFold(string(opts.UserID), string(stored)) {
		return fmt.Errorf("%w: session %q is %s, Options.UserID is %s", ErrSessionInUse, name, stored, opts.UserID)
	}
	nl, ok := opts.Login.(namedLogin)
	if !ok || nl.user == "" {
		return nil
	}
	same := strings.EqualFold(nl.user, string(stored))
	if !strings.HasPrefix(nl.user, "@") {
		// A localpart: the server is the stored session's (logins go to its homeserver).
		local, _, err := stored.Parse()
		same = err != nil || strings.EqualFold(nl.user, local)
	}
	if !same {
		return fmt.Errorf("%w: session %q is %s, Options.Login is for %s", ErrSessionInUse, name, stored, nl.user)
	}
	return nil
}
