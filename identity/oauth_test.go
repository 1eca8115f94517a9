package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// No homeserver with the OAuth 2.0 API (MSC3861, matrix-authentication-service) runs on our
// machines, and Dendrite has none. These tests use a test Matrix front instead: an httptest
// server that serves auth_metadata naming the real OP of oidc_op_test.go as its authorization
// server, registers clients into it, and accepts the OP's access tokens (asking the OP's
// userinfo endpoint) on the few client-API endpoints the tests use: whoami and send.

// dynClient is a client registered through the front: a native client of the example
// storage with the grant types it asked for.
type dynClient struct {
	*storage.Client
	grants []oidc.GrantType
}

func (c dynClient) GrantTypes() []oidc.GrantType { return c.grants }

// registered holds the clients the front registered; opStorage asks it first.
var registered sync.Map // client ID -> op.Client

func (s *opStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	if c, ok := registered.Load(clientID); ok {
		return c.(op.Client), nil
	}
	return s.Storage.GetClientByClientID(ctx, clientID)
}

// AuthorizeClientIDSecret lets the registered clients, public ones (RFC 8252), through
// without a secret, as the device endpoint asks.
func (s *opStorage) AuthorizeClientIDSecret(ctx context.Context, clientID, secret string) error {
	if _, ok := registered.Load(clientID); ok && secret == "" {
		return nil
	}
	return s.Storage.AuthorizeClientIDSecret(ctx, clientID, secret)
}

type matrixFront struct {
	URL string
	op  *testOP

	mu      sync.Mutex
	expired map[string]bool // access tokens the front refuses from now on (fault injection)
	sent    []string        // bodies of the events sent, in order
	seen    map[string]int  // how often each access token was used

	timeline []map[string]any // events the next sync delivers
	batch    int

	tokenDown     bool // the token endpoint answers 503 (fault injection)
	tokenFailures int
}

func startFront(t testing.TB, o *testOP) *matrixFront {
	f := &matrixFront{op: o, expired: map[string]bool{}, seen: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/v1/auth_metadata", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{
			"issuer": o.Issuer, "authorization_endpoint": o.Issuer + "/auth", "token_endpoint": f.URL + "/token",
			"registration_endpoint": f.URL + "/register", "revocation_endpoint": o.Issuer + "/revoke",
			"device_authorization_endpoint": o.Issuer + "/device_authorization",
			"response_types_supported":      []string{"code"}, "response_modes_supported": []string{"query", "fragment"},
			"grant_types_supported":            []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
			"code_challenge_methods_supported": []string{"S256"},
			"account_management_uri":           o.Issuer + "/account",
		})
	})
	// The token endpoint is the OP's, through a proxy that can be made to fail (fault injection).
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.tokenDown
		if down {
			f.tokenFailures++
		}
		f.mu.Unlock()
		if down {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, o.Issuer+"/oauth/token", r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, "op down", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	mux.HandleFunc("POST /register", func(w http.ResponseWriter, r *http.Request) {
		var meta struct {
			RedirectURIs []string `json:"redirect_uris"`
			GrantTypes   []string `json:"grant_types"`
			ClientURI    string   `json:"client_uri"`
		}
		if err := json.NewDecoder(r.Body).Decode(&meta); err != nil || meta.ClientURI == "" {
			writeJSON(w, 400, map[string]any{"error": "invalid_client_metadata"})
			return
		}
		cid := "dyn-" + randomID()
		var grants []oidc.GrantType
		for _, g := range meta.GrantTypes {
			grants = append(grants, oidc.GrantType(g))
		}
		sc := storage.NativeClient(cid, meta.RedirectURIs...)
		registered.Store(cid, dynClient{sc, grants})
		if slices.Contains(meta.GrantTypes, string(oidc.GrantTypeDeviceCode)) {
			// The example storage's device endpoint looks in its own table. Nothing asks the
			// OP anything while the client registers (the tests run one flow at a time).
			o.clients[cid] = sc
		}
		writeJSON(w, 201, map[string]any{"client_id": cid, "redirect_uris": meta.RedirectURIs})
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, r *http.Request) {
		sub, ok := f.auth(w, r)
		if ok {
			writeJSON(w, 200, map[string]any{"user_id": "@" + sub + ":front.test", "device_id": "FRONTDEV"})
		}
	})
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); !ok {
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.sent = append(f.sent, string(body))
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"event_id": "$" + r.PathValue("txn")})
	})
	mux.HandleFunc("GET /_matrix/client/v3/sync", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); !ok {
			return
		}
		f.mu.Lock()
		evs := f.timeline
		f.timeline = nil
		f.batch++
		next := fmt.Sprintf("s%d", f.batch)
		f.mu.Unlock()
		if len(evs) == 0 {
			time.Sleep(100 * time.Millisecond) // a short long-poll: nothing to say
		}
		rooms := map[string]any{}
		if len(evs) > 0 {
			rooms["join"] = map[string]any{"!case:front.test": map[string]any{"timeline": map[string]any{"events": evs}}}
		}
		writeJSON(w, 200, map[string]any{"next_batch": next, "rooms": rooms})
	})
	mux.HandleFunc("/_matrix/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); ok {
			writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND", "error": "not here"})
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// auth checks the bearer token with the OP's userinfo endpoint.
func (f *matrixFront) auth(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	f.seen[tok]++
	expired := f.expired[tok]
	f.mu.Unlock()
	unknown := func() {
		writeJSON(w, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "unknown token", "soft_logout": true})
	}
	if tok == "" || expired {
		unknown()
		return "", false
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, f.op.Issuer+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		writeJSON(w, 502, map[string]any{"errcode": "M_UNKNOWN", "error": "op down"})
		return "", false
	}
	defer resp.Body.Close()
	var ui struct {
		Sub string `json:"sub"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&ui) != nil || ui.Sub == "" {
		unknown()
		return "", false
	}
	return ui.Sub, true
}

func (f *matrixFront) expire(tok string) {
	f.mu.Lock()
	f.expired[tok] = true
	f.mu.Unlock()
}

// expireAll refuses every access token seen so far.
func (f *matrixFront) expireAll() {
	f.mu.Lock()
	for tok := range f.seen {
		f.expired[tok] = true
	}
	f.mu.Unlock()
}

func (f *matrixFront) sentBodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomID() string {
	return fmt.Sprintf("%d", time.Now().UnixNano())
}

// browse signs in at the OP as username, starting at an authorization URL, and follows the
// redirects to the end (the loopback listener).
func browse(start, username string) error {
	b := newBrowser(nil)
	resp, err := b.Get(start)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	authID := resp.Request.URL.Query().Get("authRequestID")
	if authID == "" {
		return fmt.Errorf("no login page: %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
	u := *resp.Request.URL
	u.RawQuery = ""
	resp, err = b.PostForm(u.String(), url.Values{"username": {username}, "password": {opPassword}, "id": {authID}})
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Signed in") {
		return fmt.Errorf("the loopback did not confirm: %d %q", resp.StatusCode, body)
	}
	return nil
}

func openDB(t testing.TB) *dbutil.Database {
	t.Helper()
	db, err := matrix.OpenDatabase(context.Background(), filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// oauthClient logs jane.smith in through the front with OAuth and returns the client and its
// transport.
func oauthClient(t testing.TB, f *matrixFront, db *dbutil.Database) (*matrix.Client, *identity.Transport) {
	t.Helper()
	ctx := context.Background()
	tr, err := identity.NewTransport(ctx, db, "", identity.TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var opened string
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: f.URL, DB: db, HTTPClient: tr.Client(),
		Login: identity.OAuth(identity.OAuthOptions{DB: db, Scopes: []string{"openid", "offline_access"},
			Open: func(ctx context.Context, u string) error {
				opened = u
				return browse(u, "jane.smith")
			}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	q := mustURL(t, opened).Query()
	if q.Get("code_challenge_method") != "S256" || !strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") {
		t.Errorf("authorization URL without PKCE S256 or loopback redirect: %v", q)
	}
	if c.UserID() != "@id-jane:front.test" {
		t.Errorf("logged in as %s", c.UserID())
	}
	return c, tr
}

func sendAndWait(t testing.TB, c *matrix.Client, text string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := c.Send(ctx, id.RoomID("!case:front.test"), matrix.Text(text), matrix.SendOptions{})
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

func TestOAuthLoginAndTransparentRefresh(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	if err := sendAndWait(t, c, "first"); err != nil {
		t.Fatalf("send: %v", err)
	}
	// The homeserver stops accepting the access token: the next send refreshes and goes
	// out, and Send never sees it.
	first := c.Session().AccessToken
	f.expire(first)
	if err := sendAndWait(t, c, "after refresh"); err != nil {
		t.Fatalf("send after the token expired: %v", err)
	}
	if got := f.sentBodies(); len(got) != 2 || !strings.Contains(got[1], "after refresh") {
		t.Errorf("sent %q", got)
	}
	if err := c.Err(); err != nil {
		t.Errorf("client error: %v", err)
	}
	u, err := identity.AccountManagementURL(context.Background(), c.Mautrix())
	if err != nil || u != o.Issuer+"/account" {
		t.Errorf("account management URL %q, %v", u, err)
	}
}

// TestOAuthConcurrentRefresh: two processes share the database (two Transports, each with
// its own memory, as two processes have) and find the token refused at once. One refreshes,
// the other picks up the rotated pair; the OP's refresh token is single-use, so a second
// refresh with the old one would log the session out.
func TestOAuthConcurrentRefresh(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	f.expire(c.Session().AccessToken)
	ctx := context.Background()
	var trs [2]*identity.Transport
	for i := range trs {
		var err error
		if trs[i], err = identity.NewTransport(ctx, db, "", identity.TransportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(trs))
	for i, tr := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/_matrix/client/v3/account/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+c.Session().AccessToken)
			resp, err := tr.Client().Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	// Both carry on with the same, valid pair.
	if err := sendAndWait(t, c, "still logged in"); err != nil {
		t.Errorf("send: %v", err)
	}
}

// TestOAuthRevokedTokenLogsOut: the session is revoked at the authorization server (by an
// administrator, or from another device), and the homeserver refuses the access token: the
// refresh is refused too, and the client is logged out with ErrUnknownToken.
func TestOAuthRevokedTokenLogsOut(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	s := c.Session()
	form := url.Values{"token": {s.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {clientIDOf(t, o, s.AccessToken)}}
	resp, err := http.PostForm(o.Issuer+"/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke at the OP: %d", resp.StatusCode)
	}
	f.expire(s.AccessToken)
	err = sendAndWait(t, c, "after revocation")
	if !errors.Is(err, matrix.ErrUnknownToken) {
		t.Fatalf("got %v, want ErrUnknownToken", err)
	}
	if !errors.Is(c.Err(), matrix.ErrUnknownToken) {
		t.Errorf("Client.Err: %v", c.Err())
	}
}

// TestOAuthLogoutRevokes: Transport.Revoke on logout ends the grant at the OP: the access
// token no longer gets userinfo and the refresh token no longer refreshes.
func TestOAuthLogoutRevokes(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, tr := oauthClient(t, f, db)
	s := c.Session()
	cid := clientIDOf(t, o, s.AccessToken)
	if err := tr.Revoke(context.Background()); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	resp, err := http.PostForm(o.Issuer+"/oauth/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {s.RefreshToken}, "client_id": {cid}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("the revoked refresh token still refreshes: %d", resp.StatusCode)
	}
}

// clientIDOf is the client the front registered last (these tests do not run in parallel).
func clientIDOf(t *testing.T, o *testOP, _ string) string {
	t.Helper()
	var last string
	registered.Range(func(k, _ any) bool {
		if k.(string) > last {
			last = k.(string)
		}
		return true
	})
	return last
}

// TestOAuthDeviceGrant: a headless tool logs in with the device grant, and keeps working
// across the expiry of its access token: the Transport's clock passes the token's expiry (the
// homeserver refuses the old token from then on, as a real one would) and the next Send goes
// out with a refreshed pair, without Send seeing it.
func TestOAuthDeviceGrant(t *testing.T) {
	if testing.Short() {
		t.Skip("the example OP polls every 5 seconds")
	}
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	ctx := context.Background()
	var skew atomic.Int64 // how far the Transport's clock is ahead
	tr, err := identity.NewTransport(ctx, db, "", identity.TransportOptions{
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	approved := make(chan error, 1)
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: f.URL, DB: db, HTTPClient: tr.Client(),
		Login: identity.OAuthDevice(identity.OAuthOptions{DB: db, Scopes: []string{"openid", "offline_access"},
			ShowCode: func(ctx context.Context, code identity.DeviceCode) error {
				if code.UserCode == "" || !strings.HasPrefix(code.VerificationURI, o.Issuer) {
					return fmt.Errorf("device code %+v", code)
				}
				// The officer enters the code on another device's browser.
				go func() { approved <- approveDevice(o, code.UserCode, "officer") }()
				return nil
			}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-approved; err != nil {
		t.Fatalf("approve: %v", err)
	}
	if c.UserID() != "@officer:front.test" {
		t.Errorf("logged in as %s", c.UserID())
	}
	if c.Session().RefreshToken == "" || c.Session().ExpiresAt.IsZero() {
		t.Fatalf("the device grant gave no refresh token or no expiry")
	}
	if err := sendAndWait(t, c, "from a headless tool"); err != nil {
		t.Fatalf("send: %v", err)
	}

	// The access token's lifetime passes.
	skew.Store(int64(time.Until(c.Session().ExpiresAt) + time.Minute))
	f.expireAll()
	if err := sendAndWait(t, c, "after the token expired"); err != nil {
		t.Fatalf("send after the access token expired: %v", err)
	}
	var gen int
	var current string
	if err := db.QueryRow(ctx, `SELECT generation, access_token FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&gen, &current); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	used := f.seen[current]
	f.mu.Unlock()
	if gen != 1 || used == 0 {
		t.Errorf("generation %d, the refreshed token used %d times: want one refresh, then its token", gen, used)
	}
	if got := f.sentBodies(); len(got) != 2 || !strings.Contains(got[1], "after the token expired") {
		t.Errorf("sent %q", got)
	}
	if err := c.Err(); err != nil {
		t.Errorf("client error: %v", err)
	}
}

// approveDevice enters userCode at the OP's device page as username and allows the grant.
func approveDevice(o *testOP, userCode, username string) error {
	b := newBrowser(nil)
	resp, err := b.PostForm(o.Issuer+"/device/login", url.Values{"user_code": {userCode}, "username": {username}, "password": {opPassword}})
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = b.PostForm(o.Issuer+"/device/confirm", url.Values{"action": {"allowed"}})
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("confirm: %d", resp.StatusCode)
	}
	return nil
}

// TestOAuthLogsNoTokens runs a login, a transparent refresh and a refused refresh with every
// logger captured (the matrix client's, bridging mautrix's, the login's and the transport's):
// no access or refresh token appears in the log or in an error's text.
func TestOAuthLogsNoTokens(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	ctx := context.Background()
	tr, err := identity.NewTransport(ctx, db, "", identity.TransportOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: f.URL, DB: db, HTTPClient: tr.Client(), Logger: logger,
		Login: identity.OAuth(identity.OAuthOptions{DB: db, Scopes: []string{"openid", "offline_access"}, Logger: logger,
			Open: func(ctx context.Context, u string) error { return browse(u, "jane.smith") }})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.Session()
	f.expireAll()
	if err := sendAndWait(t, c, "refreshed"); err != nil {
		t.Fatal(err)
	}
	// Revoke the current refresh token at the OP, then refuse the access token: the refresh
	// fails and the client is logged out.
	var current string
	if err := db.QueryRow(ctx, `SELECT refresh_token FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	resp, err := http.PostForm(o.Issuer+"/revoke", url.Values{"token": {current}, "client_id": {clientIDOf(t, o, "")}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f.mu.Lock()
	seen := []string{current}
	for tok := range f.seen {
		seen = append(seen, tok)
	}
	f.mu.Unlock()
	f.expireAll()
	var errText strings.Builder
	err = sendAndWait(t, c, "after revocation")
	if !errors.Is(err, matrix.ErrUnknownToken) {
		t.Fatalf("got %v, want ErrUnknownToken", err)
	}
	errText.WriteString(err.Error())
	if c.Err() != nil {
		errText.WriteString(c.Err().Error())
	}
	secrets := append([]string{s.AccessToken, s.RefreshToken}, seen...)
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		if strings.Contains(logs.String(), sec) {
			t.Errorf("the log holds a token")
		}
		if strings.Contains(errText.String(), sec) {
			t.Errorf("an error's text holds a token")
		}
	}
	if !strings.Contains(logs.String(), "access token refreshed") {
		t.Error("the refresh is not in the log")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOAuthTokensStoredOwnerOnly: the tokens are in the shared database, whose file only its
// owner can read.
func TestOAuthTokensStoredOwnerOnly(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	path := filepath.Join(t.TempDir(), "samtal.db")
	db, err := matrix.OpenDatabase(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	oauthClient(t, f, db)
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM samtal_identity_oauth WHERE refresh_token != ''`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("stored OAuth sessions with a refresh token: %d, %v", n, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestOAuthRefreshOutage: while the token endpoint answers 503, a Send whose token the
// homeserver refuses stays pending (the old tokens are kept, nobody is logged out); once the
// endpoint is back, the send goes out with a refreshed token.
func TestOAuthRefreshOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the outbox's retries")
	}
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	f.mu.Lock()
	f.tokenDown = true
	f.mu.Unlock()
	f.expireAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := c.Send(ctx, id.RoomID("!case:front.test"), matrix.Text("during the outage"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	matrixtest.Eventually(t, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.tokenFailures < 2 {
			return fmt.Errorf("%d refresh attempts so far", f.tokenFailures)
		}
		return nil
	})
	if err := c.Err(); err != nil {
		t.Fatalf("logged out during a token endpoint outage: %v", err)
	}
	f.mu.Lock()
	f.tokenDown = false
	f.mu.Unlock()
	if _, err := p.Wait(ctx); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if got := f.sentBodies(); len(got) != 1 || !strings.Contains(got[0], "during the outage") {
		t.Errorf("sent %q", got)
	}
}

// deliver makes the next sync carry a message from someone else.
func (f *matrixFront) deliver(body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batch++
	f.timeline = append(f.timeline, map[string]any{"type": "m.room.message", "event_id": fmt.Sprintf("$ev%d", f.batch),
		"sender": "@colleague:front.test", "origin_server_ts": time.Now().UnixMilli(),
		"content": map[string]any{"msgtype": "m.text", "body": body}})
}

// TestOAuthSyncerRefresh: the Syncer goes on through a refresh: the homeserver refuses the
// token mid-sync, and the next message still arrives, with no error from Run.
func TestOAuthSyncerRefresh(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	got := make(chan string, 10)
	s := c.NewSyncer(matrix.SyncOptions{Timeout: time.Second})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error {
		got <- evt.Content.AsMessage().Body
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	wait := func(want string) {
		t.Helper()
		select {
		case b := <-got:
			if b != want {
				t.Fatalf("got %q, want %q", b, want)
			}
		case err := <-runErr:
			t.Fatalf("the Syncer stopped: %v", err)
		case <-time.After(2 * time.Minute):
			t.Fatalf("no %q", want)
		}
	}
	matrixtest.Eventually(t, func() error {
		if !c.Syncing() {
			return errors.New("not syncing yet")
		}
		return nil
	})
	f.deliver("before")
	wait("before")
	f.expireAll()
	f.deliver("after the refresh")
	wait("after the refresh")
}

// TestTransportLeavesOtherTokens: a request with a token that is not the session's (another
// account's, say) goes out as it is.
func TestTransportLeavesOtherTokens(t *testing.T) {
	o := startOP(t)
	f := startFront(t, o)
	db := openDB(t)
	oauthClient(t, f, db)
	tr, err := identity.NewTransport(context.Background(), db, "", identity.TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer someone-elses-token")
	resp, err := tr.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f.mu.Lock()
	n := f.seen["someone-elses-token"]
	f.mu.Unlock()
	if resp.StatusCode != http.StatusUnauthorized || n != 1 {
		t.Errorf("status %d, the front saw the other token %d times", resp.StatusCode, n)
	}
}
