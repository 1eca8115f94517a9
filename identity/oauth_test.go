package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

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
func oauthClient(t testing.TB, f *oidctest.Front, db *dbutil.Database) (*matrix.Client, *identity.Transport) {
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
				return oidctest.Browse(u, "jane.smith")
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
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	if err := sendAndWait(t, c, "first"); err != nil {
		t.Fatalf("send: %v", err)
	}
	// The homeserver stops accepting the access token: the next send refreshes and goes
	// out, and Send never sees it.
	first := c.Session().AccessToken
	f.Expire(first)
	if err := sendAndWait(t, c, "after refresh"); err != nil {
		t.Fatalf("send after the token expired: %v", err)
	}
	if got := f.SentBodies(); len(got) != 2 || !strings.Contains(got[1], "after refresh") {
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
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	f.Expire(c.Session().AccessToken)
	ctx := context.Background()
	var trs [2]*identity.Transport
	for i := range trs {
		var err error
		if trs[i], err = identity.NewTransport(ctx, db, "", identity.TransportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	whoamiAtOnce(t, f.URL, c.Session().AccessToken, len(trs), func(i int) (*http.Client, error) { return trs[i].Client(), nil })
	// Both carry on with the same, valid pair.
	if err := sendAndWait(t, c, "still logged in"); err != nil {
		t.Errorf("send: %v", err)
	}
}

// TestOAuthRevokedTokenLogsOut: the session is revoked at the authorization server (by an
// administrator, or from another device), and the homeserver refuses the access token: the
// refresh is refused too, and the client is logged out with ErrUnknownToken.
func TestOAuthRevokedTokenLogsOut(t *testing.T) {
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	s := c.Session()
	form := url.Values{"token": {s.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {o.LastClientID()}}
	resp, err := http.PostForm(o.Issuer+"/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke at the OP: %d", resp.StatusCode)
	}
	f.Expire(s.AccessToken)
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
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	c, tr := oauthClient(t, f, db)
	s := c.Session()
	cid := o.LastClientID()
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

// TestOAuthDeviceGrant: a headless tool logs in with the device grant, and keeps working
// across the expiry of its access token: the Transport's clock passes the token's expiry (the
// homeserver refuses the old token from then on, as a real one would) and the next Send goes
// out with a refreshed pair, without Send seeing it.
func TestOAuthDeviceGrant(t *testing.T) {
	if testing.Short() {
		t.Skip("the example OP polls every 5 seconds")
	}
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
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
				go func() { approved <- o.ApproveDevice(code.UserCode, "officer") }()
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
	f.ExpireAll()
	if err := sendAndWait(t, c, "after the token expired"); err != nil {
		t.Fatalf("send after the access token expired: %v", err)
	}
	var gen int
	var current string
	if err := db.QueryRow(ctx, `SELECT generation, access_token FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&gen, &current); err != nil {
		t.Fatal(err)
	}
	used := f.Seen(current)
	if gen != 1 || used == 0 {
		t.Errorf("generation %d, the refreshed token used %d times: want one refresh, then its token", gen, used)
	}
	if got := f.SentBodies(); len(got) != 2 || !strings.Contains(got[1], "after the token expired") {
		t.Errorf("sent %q", got)
	}
	if err := c.Err(); err != nil {
		t.Errorf("client error: %v", err)
	}
}

// TestOAuthLogsNoTokens runs a login, a transparent refresh and a refused refresh with every
// logger captured (the matrix client's, bridging mautrix's, the login's and the transport's):
// no access or refresh token appears in the log or in an error's text.
func TestOAuthLogsNoTokens(t *testing.T) {
	logger, logs := logtest.Capture()
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	ctx := context.Background()
	tr, err := identity.NewTransport(ctx, db, "", identity.TransportOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: f.URL, DB: db, HTTPClient: tr.Client(), Logger: logger,
		Login: identity.OAuth(identity.OAuthOptions{DB: db, Scopes: []string{"openid", "offline_access"}, Logger: logger,
			Open: func(ctx context.Context, u string) error { return oidctest.Browse(u, "jane.smith") }})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.Session()
	f.ExpireAll()
	if err := sendAndWait(t, c, "refreshed"); err != nil {
		t.Fatal(err)
	}
	// Revoke the current refresh token at the OP, then refuse the access token: the refresh
	// fails and the client is logged out.
	var current string
	if err := db.QueryRow(ctx, `SELECT refresh_token FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	resp, err := http.PostForm(o.Issuer+"/revoke", url.Values{"token": {current}, "client_id": {o.LastClientID()}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := append([]string{current}, f.SeenTokens()...)
	f.ExpireAll()
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

// TestOAuthTokensStoredOwnerOnly: the tokens are in the shared database, whose file only its
// owner can read.
func TestOAuthTokensStoredOwnerOnly(t *testing.T) {
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
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
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db := openDB(t)
	c, _ := oauthClient(t, f, db)
	f.SetTokenDown(true)
	f.ExpireAll()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := c.Send(ctx, id.RoomID("!case:front.test"), matrix.Text("during the outage"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	matrixtest.Eventually(t, func() error {
		if n := f.TokenFailures(); n < 2 {
			return fmt.Errorf("%d refresh attempts so far", n)
		}
		return nil
	})
	if err := c.Err(); err != nil {
		t.Fatalf("logged out during a token endpoint outage: %v", err)
	}
	f.SetTokenDown(false)
	if _, err := p.Wait(ctx); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if got := f.SentBodies(); len(got) != 1 || !strings.Contains(got[0], "during the outage") {
		t.Errorf("sent %q", got)
	}
}

// TestOAuthSyncerRefresh: the Syncer goes on through a refresh: the homeserver refuses the
// token mid-sync, and the next message still arrives, with no error from Run.
func TestOAuthSyncerRefresh(t *testing.T) {
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
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
	f.Deliver("before")
	wait("before")
	f.ExpireAll()
	f.Deliver("after the refresh")
	wait("after the refresh")
}

// TestTransportLeavesOtherTokens: a request with a token that is not the session's (another
// account's, say) goes out as it is.
func TestTransportLeavesOtherTokens(t *testing.T) {
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
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
	n := f.Seen("someone-elses-token")
	if resp.StatusCode != http.StatusUnauthorized || n != 1 {
		t.Errorf("status %d, the front saw the other token %d times", resp.StatusCode, n)
	}
}

// whoamiAtOnce asks /whoami with token through n clients at once (client(i) makes the i-th),
// as n processes that find the token refused together, and fails the test for each that does
// not get a 200.
func whoamiAtOnce(t *testing.T, base, token string, n int, client func(i int) (*http.Client, error)) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range errs {
		wg.Go(func() { errs[i] = whoami(t.Context(), base, token, func() (*http.Client, error) { return client(i) }) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
}

func whoami(ctx context.Context, base, token string, client func() (*http.Client, error)) error {
	hc, err := client()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
