package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// ErrLogoutToken: a back-channel logout token was refused: bad signature, wrong issuer or
// audience, missing or wrong claims, too old, or seen before.
var ErrLogoutToken = errors.New("identity: logout token refused")

// backChannelEvent is the events member that marks a logout token (OpenID Connect
// Back-Channel Logout 1.0, section 2.4).
const backChannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutEvent is a verified logout token: the IdP ended the session SessionID of Subject, or
// every session of Subject when SessionID is empty.
type LogoutEvent struct {
	Issuer    string
	Subject   string
	SessionID string
	JTI       string
	IssuedAt  time.Time
}

// BackChannelOptions configure a BackChannelLogout. Issuer, ClientID, Keys and OnLogout are
// required.
type BackChannelOptions struct {
	Issuer   string        // the IdP's issuer URL, as in its discovery document
	ClientID string        // our client ID at the IdP: the token's audience
	Keys     oidc.KeySet   // the IdP's keys, such as oidc.NewRemoteKeySet(ctx, jwksURI)
	MaxAge   time.Duration // how old (iat) a token may be; 0 means 2 minutes
	// OnLogout acts on a verified token, such as ending the user's Matrix sessions or
	// Reconciler.Offboard (see OffboardOnLogout); an error makes the answer a 400, as the
	// spec asks, and the IdP may retry.
	OnLogout func(ctx context.Context, e LogoutEvent) error
	Logger   *slog.Logger

	// DB, the shared database (matrix.OpenDatabase), keeps the IDs of accepted tokens in
	// samtal_identity_logout_jti: a token replayed after a restart, or to another instance
	// sharing a PostgreSQL database, is refused. nil keeps them in memory.
	DB *dbutil.Database
}

// BackChannelLogout is the http.Handler of an OIDC back-channel logout endpoint: the IdP
// POSTs logout_token (a signed JWT); the handler verifies it (signature against the IdP's
// keys, iss, aud, iat, the events claim, sid or sub, no nonce), refuses a token it has seen
// (jti) and calls OnLogout.
//
// Seen token IDs are kept (in BackChannelOptions.DB, or in memory) until the token would be
// refused anyway: MaxAge after its iat, or at its exp if that is sooner, and a minute more for
// clocks that differ.
type BackChannelLogout struct {
	opts     BackChannelOptions
	verifier *oidc.IDTokenVerifier
	log      *slog.Logger
	now      func() time.Time
	seen     jtiStore
}

// NewBackChannelLogout returns the handler.
func NewBackChannelLogout(opts BackChannelOptions) (*BackChannelLogout, error) {
	if opts.Issuer == "" || opts.ClientID == "" || opts.Keys == nil || opts.OnLogout == nil {
		return nil, errors.New("identity: back-channel logout needs Issuer, ClientID, Keys and OnLogout")
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 2 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// Logout tokens need not carry exp: it is checked below when present.
	v := oidc.NewVerifier(opts.Issuer, opts.Keys, &oidc.Config{ClientID: opts.ClientID, SkipExpiryCheck: true})
	var seen jtiStore = &memoryJTI{seen: map[[2]string]time.Time{}}
	if opts.DB != nil {
		seen = &dbJTI{db: &offboardDB{raw: opts.DB}}
	}
	return &BackChannelLogout{opts: opts, verifier: v, log: log, now: time.Now, seen: seen}, nil
}

// ServeHTTP answers 200 to a verified token acted on, and 400 to anything else, as the spec
// asks.
func (b *BackChannelLogout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		http.Error(w, "POST a logout_token", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		logoutError(w, "the body is not a form")
		return
	}
	e, err := b.Verify(r.Context(), r.PostForm.Get("logout_token"))
	if err != nil {
		b.log.Warn("identity: logout token refused", "err", err)
		logoutError(w, "logout token refused")
		return
	}
	if err := b.opts.OnLogout(r.Context(), e); err != nil {
		b.log.Error("identity: acting on a logout failed", "sub", e.Subject, "err", err)
		b.forget(r.Context(), e) // let the IdP's retry through
		logoutError(w, "logout could not be completed")
		return
	}
	w.WriteHeader(http.StatusOK)
}

func logoutError(w http.ResponseWriter, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": desc})
}

// Verify checks a logout token and records its jti, so that the same token is refused
// afterwards. Errors match ErrLogoutToken and never hold the token.
func (b *BackChannelLogout) Verify(ctx context.Context, raw string) (LogoutEvent, error) {
	if raw == "" {
		return LogoutEvent{}, fmt.Errorf("%w: no logout_token", ErrLogoutToken)
	}
	tok, err := b.verifier.Verify(ctx, raw)
	if err != nil {
		return LogoutEvent{}, fmt.Errorf("%w: %w", ErrLogoutToken, err)
	}
	var c struct {
		Events map[string]json.RawMessage `json:"events"`
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		Nonce  *string                    `json:"nonce"`
		Exp    *int64                     `json:"exp"`
		Iat    *int64                     `json:"iat"`
	}
	if err := tok.Claims(&c); err != nil {
		return LogoutEvent{}, fmt.Errorf("%w: claims: %w", ErrLogoutToken, err)
	}
	now := b.now()
	switch ev, ok := c.Events[backChannelEvent]; {
	case !ok || len(ev) == 0 || ev[0] != '{':
		return LogoutEvent{}, fmt.Errorf("%w: no %s event", ErrLogoutToken, backChannelEvent)
	case c.Nonce != nil:
		return LogoutEvent{}, fmt.Errorf("%w: a logout token must not carry a nonce", ErrLogoutToken)
	case tok.Subject == "" && c.SID == "":
		return LogoutEvent{}, fmt.Errorf("%w: neither sub nor sid", ErrLogoutToken)
	case c.JTI == "":
		return LogoutEvent{}, fmt.Errorf("%w: no jti", ErrLogoutToken)
	case c.Iat == nil:
		return LogoutEvent{}, fmt.Errorf("%w: no iat", ErrLogoutToken)
	case tok.IssuedAt.Before(now.Add(-b.opts.MaxAge)):
		return LogoutEvent{}, fmt.Errorf("%w: issued %s ago, more than %s", ErrLogoutToken, now.Sub(tok.IssuedAt).Round(time.Second), b.opts.MaxAge)
	case tok.IssuedAt.After(now.Add(time.Minute)):
		return LogoutEvent{}, fmt.Errorf("%w: issued in the future", ErrLogoutToken)
	case c.Exp != nil && time.Unix(*c.Exp, 0).Before(now):
		return LogoutEvent{}, fmt.Errorf("%w: expired", ErrLogoutToken)
	}
	until := tok.IssuedAt.Add(b.opts.MaxAge)
	if c.Exp != nil && time.Unix(*c.Exp, 0).Before(until) {
		until = time.Unix(*c.Exp, 0)
	}
	fresh, err := b.seen.remember(ctx, tok.Issuer, c.JTI, now, until.Add(time.Minute))
	if err != nil {
		// Not knowing whether the token was seen, it is refused: the IdP may retry.
		return LogoutEvent{}, fmt.Errorf("%w: cannot check for a replay: %w", ErrLogoutToken, err)
	}
	if !fresh {
		return LogoutEvent{}, fmt.Errorf("%w: replayed (jti seen before)", ErrLogoutToken)
	}
	return LogoutEvent{Issuer: tok.Issuer, Subject: tok.Subject, SessionID: c.SID, JTI: c.JTI, IssuedAt: tok.IssuedAt}, nil
}

func (b *BackChannelLogout) forget(ctx context.Context, e LogoutEvent) {
	if err := b.seen.forget(ctx, e.Issuer, e.JTI); err != nil {
		b.log.Error("identity: forget a logout token that was not acted on", "err", err)
	}
}

// OffboardOnLogout adapts a Reconciler to OnLogout: the token's subject is mapped to a Matrix
// ID by userID, and that person is offboarded at once.
func OffboardOnLogout(r *Reconciler, userID func(ctx context.Context, e LogoutEvent) (id.UserID, error)) func(context.Context, LogoutEvent) error {
	return func(ctx context.Context, e LogoutEvent) error {
		u, err := userID(ctx, e)
		if err != nil {
			return err
		}
		_, err = r.Offboard(ctx, u, "logged out by the identity provider (back-channel logout)")
		return err
	}
}
