package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"
	"maunium.net/go/mautrix"

	"github.com/samtalhq/samtal/matrix"
)

// blackHole is the fault these tests inject: a server that accepts every connection, reads
// what it is sent and never answers.
type blackHole struct {
	URL   string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{URL: "http://" + ln.Addr().String(), ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() { defer b.wg.Done(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return b
}

func (b *blackHole) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// fakeAS is the rest of the fault's setup: a provider and Matrix authorization server that
// answer discovery, registration and the device authorization at once and name the black
// hole (or themselves) for the endpoint under test. Only what leads to that endpoint answers.
func fakeAS(t *testing.T, endpoint map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	self := "http://" + srv.Listener.Addr().String()
	get := func(k, def string) string {
		if v, ok := endpoint[k]; ok {
			return v
		}
		return self + def
	}
	meta := map[string]any{
		"issuer": self, "authorization_endpoint": self + "/auth", "token_endpoint": get("token", "/token"),
		"jwks_uri": get("jwks", "/keys"), "registration_endpoint": get("registration", "/register"),
		"device_authorization_endpoint": get("device", "/device"), "revocation_endpoint": get("revocation", "/revoke"),
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"}, "code_challenge_methods_supported": []string{"S256"},
		"grant_types_supported": []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
	}
	mux := http.NewServeMux()
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	mux.HandleFunc("/.well-known/openid-configuration", reply(meta))
	mux.HandleFunc("/_matrix/client/v1/auth_metadata", reply(meta))
	mux.HandleFunc("/keys", reply(map[string]any{"keys": []any{}}))
	mux.HandleFunc("/register", reply(map[string]any{"client_id": "fake-client"}))
	mux.HandleFunc("/device", reply(map[string]any{"device_code": "dc", "user_code": "UC", "verification_uri": self + "/verify",
		"expires_in": 600, "interval": 1}))
	srv.Config.Handler = mux
	srv.Start()
	return srv
}

// TestTimeouts: every outbound call path, against a server that takes the request and never
// answers, fails within its timeout with ErrTimeout (naming the step), and leaves no goroutine
// behind. Without a timeout the call would hang until the guard below gives up.
func TestTimeouts(t *testing.T) {
	const d = 300 * time.Millisecond
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(t *testing.T, hole string, client *http.Client) error
	}{
		{"discovery", func(t *testing.T, hole string, client *http.Client) error {
			_, err := Connect(ctx, ProviderOptions{Issuer: hole, ClientID: "c", HTTPClient: client, Timeout: d})
			return err
		}},
		{"JWKS", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"jwks": hole + "/keys"})
			defer as.Close()
			p, err := Connect(ctx, ProviderOptions{Issuer: as.URL, ClientID: "c", HTTPClient: client, Timeout: d})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Verify(ctx, signedToken(t, as.URL), "")
			return err
		}},
		{"token exchange (sign-in)", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"token": hole + "/token"})
			defer as.Close()
			return signInCallback(t, as.URL, client)
		}},
		{"auth_metadata", func(t *testing.T, hole string, client *http.Client) error {
			return oauthLogin(t, hole, client, false)
		}},
		{"registration", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"registration": hole + "/register"})
			defer as.Close()
			return oauthLogin(t, as.URL, client, false)
		}},
		{"token exchange (Matrix OAuth)", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"token": hole + "/token"})
			defer as.Close()
			return oauthLogin(t, as.URL, client, false)
		}},
		{"device authorization", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"device": hole + "/device"})
			defer as.Close()
			return oauthLogin(t, as.URL, client, true)
		}},
		{"device polling", func(t *testing.T, hole string, client *http.Client) error {
			as := fakeAS(t, map[string]string{"token": hole + "/token"})
			defer as.Close()
			return oauthLogin(t, as.URL, client, true)
		}},
		{"refresh", func(t *testing.T, hole string, client *http.Client) error {
			// The homeserver refuses the token, and the token endpoint does not answer.
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"expired"}`)
			}))
			defer hs.Close()
			tr, done := storedSession(t, client, &oauthRecord{ClientID: "c", TokenEndpoint: hole + "/token", AccessToken: "at", RefreshToken: "rt"})
			defer done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/_matrix/client/v3/account/whoami", nil)
			req.Header.Set("Authorization", "Bearer at")
			resp, err := tr.Client().Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !errors.Is(err, ErrRefreshUnavailable) {
				t.Errorf("%v is not ErrRefreshUnavailable", err)
			}
			return err
		}},
		{"revocation", func(t *testing.T, hole string, client *http.Client) error {
			tr, done := storedSession(t, client, &oauthRecord{ClientID: "c", TokenEndpoint: hole + "/token", Revocation: hole + "/revoke",
				AccessToken: "at", RefreshToken: "rt"})
			defer done()
			return tr.Revoke(ctx)
		}},
		{"login flows (legacy SSO)", func(t *testing.T, hole string, client *http.Client) error {
			hs, err := mautrix.NewClient(hole, "", "")
			if err != nil {
				t.Fatal(err)
			}
			hs.Client = client
			_, err = LegacySSO(SSOOptions{HTTPTimeout: d, Open: func(context.Context, string) error { return nil }}).Login(ctx, hs, "dev")
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			hole := newBlackHole(t)
			defer hole.close()
			// A client without a timeout of its own: the bound must come from samtal.
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			client := &http.Client{Transport: base}
			done := make(chan error, 1)
			go func() { done <- c.run(t, hole.URL, client) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute): // a guard against a hang, not a timing assert
				t.Fatal("no answer and no timeout: the call waits for ever")
			}
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("got %v, want ErrTimeout", err)
			}
			t.Logf("%v", err)
		})
	}
}

func signedToken(t *testing.T, issuer string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "unknown"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"iss": issuer, "aud": "c", "sub": "s", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signInCallback starts a sign-in at a web application and comes back with a code, which the
// application exchanges at the provider's token endpoint; it returns the callback's error.
func signInCallback(t *testing.T, issuer string, client *http.Client) error {
	t.Helper()
	ctx := context.Background()
	p, err := Connect(ctx, ProviderOptions{Issuer: issuer, ClientID: "c", HTTPClient: client, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	app := httptest.NewUnstartedServer(nil)
	base := "http://" + app.Listener.Addr().String()
	si, err := NewSignIn(p, SignInOptions{RedirectURL: base + "/callback", CookieKey: make([]byte, 32),
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			got <- err
			http.Error(w, "no", http.StatusBadGateway)
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/login", si.Login())
	mux.Handle("/callback", si.Callback())
	app.Config.Handler = mux
	app.Start()
	defer app.Close()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Transport: client.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	resp, err = browser.Get(base + "/callback?" + url.Values{"code": {"a-code"}, "state": {loc.Query().Get("state")}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	err = <-got
	if !errors.Is(err, ErrCodeExchange) {
		t.Errorf("%v is not ErrCodeExchange", err)
	}
	return err
}

// oauthLogin runs OAuth (or OAuthDevice) against the homeserver at hs; the user's browser
// comes back with a code at once.
func oauthLogin(t *testing.T, hs string, client *http.Client, device bool) error {
	t.Helper()
	mx, err := mautrix.NewClient(hs, "", "")
	if err != nil {
		t.Fatal(err)
	}
	mx.Client = client
	db, err := matrix.OpenDatabase(context.Background(), filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opts := OAuthOptions{DB: db, HTTPTimeout: 300 * time.Millisecond,
		Open: func(ctx context.Context, u string) error {
			q := mustParse(t, u).Query()
			back := q.Get("redirect_uri") + "?" + url.Values{"code": {"a-code"}, "state": {q.Get("state")}}.Encode()
			resp, err := client.Get(back)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		},
		ShowCode: func(context.Context, DeviceCode) error { return nil },
	}
	login := OAuth(opts)
	if device {
		login = OAuthDevice(opts)
	}
	_, err = login.Login(context.Background(), mx, "dev")
	if err != nil && !errors.Is(err, matrix.ErrLogin) {
		t.Errorf("%v is not matrix.ErrLogin", err)
	}
	return err
}

func mustParse(t *testing.T, u string) *url.URL {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// storedSession stores r as the default OAuth session and returns its Transport over client's,
// and what closes its database.
func storedSession(t *testing.T, client *http.Client, r *oauthRecord) (*Transport, func()) {
	t.Helper()
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := openTokenStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.save(ctx, "default", r); err != nil {
		t.Fatal(err)
	}
	tr, err := NewTransport(ctx, db, "", TransportOptions{Base: client.Transport, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return tr, func() { db.Close() }
}
