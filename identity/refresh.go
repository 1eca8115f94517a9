package identity

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/backoff"
	"github.com/samtalhq/samtal/matrix"
)

// ErrRefreshUnavailable: the token endpoint could not be reached or answered 5xx. The old
// tokens are kept and the request is retried later (it matches matrix.ErrUnreachable's
// handling: the outbox keeps the item).
var ErrRefreshUnavailable = errors.New("identity: token refresh is unavailable for now")

// TransportOptions configure a Transport. The zero value is a working default.
type TransportOptions struct {
	Base          http.RoundTripper // nil means http.DefaultTransport
	Timeout       time.Duration     // of each request to the token endpoint; 0 means DefaultHTTPTimeout
	RefreshBefore time.Duration     // refresh this long before expiry; 0 means one minute (the clock skew)
	Lease         time.Duration     // how long one process may take to refresh; 0 means 30 seconds
	Logger        *slog.Logger      // nil means slog.Default()
	Now           func() time.Time
}

// Transport keeps an OAuth 2.0 session's tokens fresh under a matrix.Client: give
// Transport.Client() as matrix.Options.HTTPClient. It puts the current access token on every
// request that carries one, refreshes it shortly before it expires and when the homeserver
// answers M_UNKNOWN_TOKEN (then the request is sent once more), so that neither Send nor the
// Syncer sees the rotation. The tokens live in the shared database: processes sharing it
// refresh one at a time, and one picks up what another rotated. A refresh the server refuses
// (4xx) leaves the homeserver's 401, which the client reports as matrix.ErrUnknownToken; a
// token endpoint that is down (5xx, network) keeps the old tokens and the request fails as
// unreachable, to be retried.
//
// matrix.Client.Session shows the tokens of the login, not the current ones.
type Transport struct {
	store  *tokenStore
	name   string
	base   http.RoundTripper
	client *http.Client // to the token endpoint
	opts   TransportOptions
	log    *slog.Logger
	holder string

	mu  sync.Mutex // one refresh at a time in this process
	cur *oauthRecord
	// Until when the session is taken to be none of OAuth's (no record stored), unless this
	// process stores a login meanwhile (noneSaves is oauthSaves when it was found none): a
	// password session's every request would read the database otherwise.
	noneUntil time.Time
	noneSaves int64
	held      map[string]struct{} // the access tokens this Transport held before cur's
}

// NewTransport returns the Transport of the OAuth session stored under sessionName (the
// matrix.Options.SessionName of the client; "" means "default") by OAuth or OAuthDevice.
func NewTransport(ctx context.Context, db *dbutil.Database, sessionName string, opts TransportOptions) (*Transport, error) {
	store, err := openTokenStore(ctx, db)
	if err != nil {
		return nil, err
	}
	if sessionName == "" {
		sessionName = "default"
	}
	if opts.Base == nil {
		opts.Base = http.DefaultTransport
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultHTTPTimeout
	}
	if opts.RefreshBefore == 0 {
		opts.RefreshBefore = DefaultClockSkew
	}
	if opts.Lease == 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Transport{store: store, name: sessionName, base: opts.Base, opts: opts,
		client: &http.Client{Transport: opts.Base, Timeout: opts.Timeout},
		log:    opts.Logger.With("session", sessionName), holder: randomString()[:16]}, nil
}

// Client returns an HTTP client over t with a 2-minute timeout per request, for
// matrix.Options.HTTPClient.
func (t *Transport) Client() *http.Client {
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	bearer, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	cur, err := t.current(ctx)
	if err != nil {
		return nil, err
	}
	if cur == nil || !t.ours(bearer, cur) {
		return t.base.RoundTrip(req) // not this OAuth session's token: leave it as it is
	}
	if !cur.ExpiresAt.IsZero() && t.opts.Now().Add(t.opts.RefreshBefore).After(cur.ExpiresAt) {
		if fresh, err := t.refresh(ctx, cur.Generation); err == nil {
			cur = fresh
		} else if !errors.Is(err, matrix.ErrUnknownToken) {
			t.log.WarnContext(ctx, "token refresh before expiry failed; trying the current token", "err", err)
		}
	}
	resp, err := t.send(req, cur.AccessToken)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var e struct {
		Errcode string `json:"errcode"`
	}
	if json.Unmarshal(body, &e) != nil || e.Errcode != "M_UNKNOWN_TOKEN" {
		return resp, nil
	}
	fresh, err := t.refresh(ctx, cur.Generation)
	switch {
	case errors.Is(err, matrix.ErrUnknownToken):
		t.log.WarnContext(ctx, "the session was ended: the token endpoint refused the refresh token", "err", err)
		return resp, nil // the homeserver's own 401: the client is logged out
	case err != nil:
		return nil, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot send the body again; the caller retries
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	return t.send(retry, fresh.AccessToken)
}

// ours reports whether bearer is a token of the session: the login's (which matrix.Session
// keeps), or one that this Transport has held.
func (t *Transport) ours(bearer string, cur *oauthRecord) bool {
	if subtle.ConstantTimeCompare([]byte(bearer), []byte(cur.AccessToken)) == 1 ||
		subtle.ConstantTimeCompare([]byte(bearer), []byte(cur.LoginToken)) == 1 {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.held[bearer]
	return ok
}

func (t *Transport) send(req *http.Request, token string) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return t.base.RoundTrip(r)
}

// noneRecheck is how long a Transport whose session has no OAuth record stored takes that to
// hold before it reads the database again.
const noneRecheck = 10 * time.Second

// current returns the tokens in memory, loading them the first time.
func (t *Transport) current(ctx context.Context) (*oauthRecord, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil {
		if now := t.opts.Now(); now.Before(t.noneUntil) && oauthSaves.Load() == t.noneSaves {
			return nil, nil
		}
		saves := oauthSaves.Load() // before the read: a login stored after it is looked for
		r, err := t.store.load(ctx, t.name)
		if err != nil {
			return nil, err
		}
		t.cur = r
		if r == nil {
			// Looked for again after a login in this process, or a while later: one
			// stored by another process is found then (its requests pass through untouched
			// until that).
			t.noneUntil, t.noneSaves = t.opts.Now().Add(noneRecheck), saves
		}
	}
	return t.cur, nil
}

// refresh rotates the tokens of generation gen, or returns newer ones when this or another
// process already rotated them.
func (t *Transport) refresh(ctx context.Context, gen int64) (*oauthRecord, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != nil && t.cur.Generation > gen {
		return t.cur, nil // another request of this process refreshed meanwhile
	}
	deadline := t.opts.Now().Add(t.opts.Lease + t.opts.Timeout)
	for attempt := 1; ; attempt++ {
		r, err := t.store.load(ctx, t.name)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("%w: no OAuth session %q is stored", matrix.ErrUnknownToken, t.name)
		}
		if r.Generation > gen {
			t.setCur(r)
			t.log.DebugContext(ctx, "picked up tokens another process rotated", "generation", r.Generation)
			return r, nil
		}
		ok, err := t.store.lease(ctx, t.name, t.holder, t.opts.Now(), t.opts.Lease)
		if err != nil {
			return nil, err
		}
		if ok {
			// Read again under the lease: another process may have rotated just before.
			if r, err = t.store.load(ctx, t.name); err != nil || r == nil || r.Generation > gen {
				_ = t.store.release(ctx, t.name, t.holder)
				if err != nil || r == nil {
					return nil, fmt.Errorf("%w: OAuth session %q vanished: %v", matrix.ErrUnknownToken, t.name, err)
				}
				t.setCur(r)
				return r, nil
			}
			return t.rotate(ctx, r)
		}
		if t.opts.Now().After(deadline) {
			return nil, fmt.Errorf("%w: another process holds the refresh of %q", ErrRefreshUnavailable, t.name)
		}
		if !backoff.Sleep(ctx, backoff.Delay(attempt, 50*time.Millisecond, time.Second)) {
			return nil, ctx.Err()
		}
	}
}

// rotate sends the refresh request for r, holding the lease.
func (t *Transport) rotate(ctx context.Context, r *oauthRecord) (*oauthRecord, error) {
	tok, err := tokenRequest(ctx, t.client, r.TokenEndpoint, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken}, "client_id": {r.ClientID},
	})
	if err != nil {
		_ = t.store.release(context.WithoutCancel(ctx), t.name, t.holder)
		return nil, err
	}
	next := *r
	next.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		next.RefreshToken = tok.RefreshToken
	}
	next.ExpiresAt = time.Time{}
	if tok.ExpiresIn > 0 {
		next.ExpiresAt = t.opts.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	ok, err := t.store.rotate(context.WithoutCancel(ctx), t.name, t.holder, r.Generation, next.AccessToken, next.RefreshToken, next.ExpiresAt)
	if err != nil {
		return nil, err
	}
	if !ok {
		// The lease ran out and another process took over: its tokens win.
		t.log.WarnContext(ctx, "the refresh lease ran out before the tokens were stored")
		stored, err := t.store.load(ctx, t.name)
		if err != nil || stored == nil {
			return nil, fmt.Errorf("%w: OAuth session %q vanished", matrix.ErrUnknownToken, t.name)
		}
		t.setCur(stored)
		return stored, nil
	}
	next.Generation = r.Generation + 1
	t.setCur(&next)
	t.log.InfoContext(ctx, "access token refreshed", "generation", next.Generation)
	return &next, nil
}

// setCur makes r the current tokens, remembering the access token it replaces. t.mu is held.
func (t *Transport) setCur(r *oauthRecord) {
	if t.cur != nil && t.cur.AccessToken != r.AccessToken {
		if t.held == nil || len(t.held) > 1000 {
			t.held = map[string]struct{}{}
		}
		t.held[t.cur.AccessToken] = struct{}{}
	}
	t.cur = r
}

// Revoke ends the session at the authorization server (its refresh token, and with it the
// access token) and forgets it. Call it on logout, before matrix.Client.Logout.
func (t *Transport) Revoke(ctx context.Context) error {
	r, err := t.store.load(ctx, t.name)
	if err != nil || r == nil {
		return err
	}
	if r.Revocation != "" {
		for _, tok := range []struct{ v, hint string }{{r.RefreshToken, "refresh_token"}, {r.AccessToken, "access_token"}} {
			if tok.v == "" {
				continue
			}
			if err := revoke(ctx, t.client, r.Revocation, r.ClientID, tok.v, tok.hint); err != nil {
				return err
			}
		}
	}
	t.mu.Lock()
	t.cur = nil
	t.mu.Unlock()
	return t.store.delete(ctx, t.name)
}

// tokenResponse is the token endpoint's answer (RFC 6749 section 5.1).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Error        string `json:"error"`
}

// tokenRequest posts form to a token endpoint. A 4xx answer matches matrix.ErrUnknownToken
// (the grant is gone: logged out); 5xx and network errors match ErrRefreshUnavailable. No
// error text holds a token.
func tokenRequest(ctx context.Context, c *http.Client, endpoint string, form url.Values) (*tokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("identity: token endpoint %q: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if isTimeout(ctx, err) {
		return nil, fmt.Errorf("%w: %w", ErrRefreshUnavailable, timeoutError("token endpoint", c.Timeout))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrRefreshUnavailable, redactURLError(err))
	}
	defer resp.Body.Close()
	var tok tokenResponse
	dec := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&tok)
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: token endpoint answered %d", ErrRefreshUnavailable, resp.StatusCode)
	case resp.StatusCode >= 400:
		return nil, fmt.Errorf("%w: token endpoint refused the grant: %d %s", matrix.ErrUnknownToken, resp.StatusCode, errorCode(tok.Error))
	case dec != nil || tok.AccessToken == "":
		return nil, fmt.Errorf("%w: token endpoint's answer has no access token", ErrRefreshUnavailable)
	}
	return &tok, nil
}

// revoke revokes one token (RFC 7009). An unknown token counts as revoked.
func revoke(ctx context.Context, c *http.Client, endpoint, clientID, token, hint string) error {
	form := url.Values{"token": {token}, "token_type_hint": {hint}, "client_id": {clientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("identity: revocation endpoint %q: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if isTimeout(ctx, err) {
		return fmt.Errorf("identity: revoke %s: %w", hint, timeoutError("revocation endpoint", c.Timeout))
	}
	if err != nil {
		return fmt.Errorf("identity: revoke %s: %s", hint, redactURLError(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("identity: revoke %s: status %d", hint, resp.StatusCode)
	}
	return nil
}
