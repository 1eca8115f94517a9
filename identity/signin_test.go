package identity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/internal/oidctest"
)

// webApp is a web application that signs its users in with the test OP.
type webApp struct {
	URL    string
	op     *oidctest.OP
	p      *identity.Provider
	signIn *identity.SignIn

	mu   sync.Mutex
	who  []*identity.Identity
	errs []error
}

func (a *webApp) lastErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.errs) == 0 {
		return nil
	}
	return a.errs[len(a.errs)-1]
}

func (a *webApp) signedIn() []*identity.Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*identity.Identity(nil), a.who...)
}

// appListener is a loopback listener whose URL is known before the OP registers the client.
func appListener(t testing.TB) (net.Listener, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, "http://" + ln.Addr().String()
}

// startApp starts the OP with the client "web" (and "other", a second application) and a web
// application signing in as "web".
func startApp(t testing.TB, mapper *identity.Mapper) *webApp {
	t.Helper()
	ln, base := appListener(t)
	op := oidctest.Start(t,
		storage.WebClient("web", "web-secret", base+"/callback"),
		storage.WebClient("other", "other-secret", base+"/callback"))
	return startAppWith(t, op, ln, base, "web", "web-secret", mapper)
}

func startAppWith(t testing.TB, op *oidctest.OP, ln net.Listener, base, clientID, secret string, mapper *identity.Mapper) *webApp {
	t.Helper()
	ctx := context.Background()
	p, err := identity.Connect(ctx, identity.ProviderOptions{Issuer: op.Issuer, ClientID: clientID, ClientSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	a := &webApp{URL: base, op: op, p: p}
	a.signIn, err = identity.NewSignIn(p, identity.SignInOptions{
		RedirectURL: base + "/callback",
		CookieKey:   []byte("0123456789abcdef0123456789abcdef"),
		Mapper:      mapper,
		OnSignIn: func(w http.ResponseWriter, r *http.Request, who *identity.Identity) {
			a.mu.Lock()
			a.who = append(a.who, who)
			a.mu.Unlock()
			http.Redirect(w, r, who.ReturnTo, http.StatusFound)
		},
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			a.mu.Lock()
			a.errs = append(a.errs, err)
			a.mu.Unlock()
			http.Error(w, "sign-in failed", http.StatusBadRequest)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/login", a.signIn.Login())
	mux.Handle("/callback", a.signIn.Callback())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "home "+r.URL.Path) })
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return a
}

func TestSignInEndToEnd(t *testing.T) {
	mapper := &identity.Mapper{Server: "example.se", IDTemplate: identity.TchapIDTemplate}
	app := startApp(t, mapper)
	b := oidctest.NewBrowser()
	resp := b.LoginAtOP(t, app.URL+"/login?return_to=/cases/4711", "jane.smith")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "home /cases/4711" {
		t.Fatalf("after sign-in: %d %q (error: %v)", resp.StatusCode, body, app.lastErr())
	}
	who := app.signedIn()
	if len(who) != 1 {
		t.Fatalf("signed in %d times", len(who))
	}
	w := who[0]
	if w.Subject != "id-jane" || w.Issuer != app.op.Issuer {
		t.Errorf("subject %q issuer %q", w.Subject, w.Issuer)
	}
	if w.MatrixID != "@jane.smith-example.se:example.se" || w.DisplayName != "Jane Smith" {
		t.Errorf("mapped to %q %q", w.MatrixID, w.DisplayName)
	}
	if w.IDToken == "" || w.Token == nil || w.Token.AccessToken == "" {
		t.Error("the identity has no tokens")
	}
	// The cookie is gone after the callback.
	for _, c := range b.Jar.Cookies(resp.Request.URL) {
		if c.Name == identity.DefaultCookieName {
			t.Error("the sign-in cookie is still set")
		}
	}
}

func TestSignInCookieAttributes(t *testing.T) {
	app := startApp(t, nil)
	b := oidctest.NewBrowser()
	b.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := b.Get(app.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	q := loc.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Errorf("authorization request lacks PKCE S256, nonce or state: %v", q)
	}
	var found bool
	for _, c := range resp.Cookies() {
		if c.Name != identity.DefaultCookieName {
			continue
		}
		found = true
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge <= 0 || c.MaxAge > 600 || c.Path != "/callback" {
			t.Errorf("cookie attributes: %+v", c)
		}
		for _, secret := range []string{q.Get("state"), q.Get("nonce")} {
			if strings.Contains(c.Value, secret) {
				t.Error("the cookie shows the state or nonce in the clear")
			}
		}
	}
	if !found {
		t.Fatal("no sign-in cookie")
	}
}

// stopAtCallback signs in at the OP and returns the callback URL the OP sent the browser to,
// without following it.
func stopAtCallback(t *testing.T, app *webApp, b *oidctest.Browser, user string) string {
	t.Helper()
	b.StopAt = "/callback"
	return oidctest.CallbackURL(t, b.LoginAtOP(t, app.URL+"/login", user))
}

func getStatus(t *testing.T, c *http.Client, u string) int {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestSignInCallbackRefusals(t *testing.T) {
	app := startApp(t, nil)

	t.Run("without cookie", func(t *testing.T) {
		b := oidctest.NewBrowser()
		cb := stopAtCallback(t, app, b, "jane.smith")
		if st := getStatus(t, http.DefaultClient, cb); st != http.StatusBadRequest {
			t.Errorf("status %d", st)
		}
		if err := app.lastErr(); !errors.Is(err, identity.ErrNoCookie) {
			t.Errorf("got %v, want ErrNoCookie", err)
		}
	})
	t.Run("wrong state", func(t *testing.T) {
		b := oidctest.NewBrowser()
		cb := stopAtCallback(t, app, b, "jane.smith")
		cb = strings.Replace(cb, "state=", "state=x", 1)
		b.StopAt = ""
		if st := getStatus(t, b.Client, cb); st != http.StatusBadRequest {
			t.Errorf("status %d", st)
		}
		if err := app.lastErr(); !errors.Is(err, identity.ErrState) {
			t.Errorf("got %v, want ErrState", err)
		}
	})
	t.Run("replayed callback", func(t *testing.T) {
		b := oidctest.NewBrowser()
		cb := stopAtCallback(t, app, b, "jane.smith")
		jar := b.Jar.Cookies(mustURL(t, cb))
		b.StopAt = "/"
		getStatus(t, b.Client, cb)
		if n := len(app.signedIn()); n == 0 {
			t.Fatalf("first callback refused: %v", app.lastErr())
		}
		// An attacker who copied the cookie and the callback URL tries again.
		b2 := oidctest.NewBrowser()
		b2.Jar.SetCookies(mustURL(t, cb), jar)
		getStatus(t, b2.Client, cb)
		if err := app.lastErr(); !errors.Is(err, identity.ErrReplayed) {
			t.Errorf("got %v, want ErrReplayed", err)
		}
	})
	t.Run("replayed code at another instance", func(t *testing.T) {
		// A second instance of the application (no shared memory of states) gets the code
		// a second time: the OP refuses it.
		b := oidctest.NewBrowser()
		cb := stopAtCallback(t, app, b, "jane.smith")
		jar := b.Jar.Cookies(mustURL(t, cb))
		b.StopAt = "/"
		getStatus(t, b.Client, cb)
		twin := &webApp{}
		var err error
		twin.signIn, err = identity.NewSignIn(app.p, identity.SignInOptions{
			RedirectURL: app.URL + "/callback", CookieKey: []byte("0123456789abcdef0123456789abcdef"),
			OnError: func(w http.ResponseWriter, r *http.Request, err error) {
				twin.mu.Lock()
				twin.errs = append(twin.errs, err)
				twin.mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, cb, nil)
		for _, c := range jar {
			req.AddCookie(c)
		}
		twin.signIn.Callback().ServeHTTP(httptest.NewRecorder(), req)
		if err := twin.lastErr(); !errors.Is(err, identity.ErrCodeExchange) {
			t.Errorf("got %v, want ErrCodeExchange", err)
		}
	})
	t.Run("altered cookie", func(t *testing.T) {
		b := oidctest.NewBrowser()
		cb := stopAtCallback(t, app, b, "jane.smith")
		u := mustURL(t, cb)
		cs := b.Jar.Cookies(u)
		for _, c := range cs {
			first := "A"
			if strings.HasPrefix(c.Value, "A") {
				first = "B" // a cookie that starts with A would be left as it was (1 in 64)
			}
			c.Value = first + c.Value[1:]
		}
		req := httptest.NewRequest(http.MethodGet, cb, nil)
		for _, c := range cs {
			req.AddCookie(c)
		}
		app.signIn.Callback().ServeHTTP(httptest.NewRecorder(), req)
		if err := app.lastErr(); !errors.Is(err, identity.ErrBadCookie) {
			t.Errorf("got %v, want ErrBadCookie", err)
		}
	})
	t.Run("provider error", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, app.URL+"/callback?error=access_denied&state=x", nil)
		app.signIn.Callback().ServeHTTP(httptest.NewRecorder(), req)
		if err := app.lastErr(); !errors.Is(err, identity.ErrDenied) || !strings.Contains(err.Error(), "access_denied") {
			t.Errorf("got %v, want ErrDenied with access_denied", err)
		}
	})
}

// TestSignInOtherClientsCode: a code issued to another application of the same OP, sent to
// this application's callback, gives an ID token for the other client, which is refused.
func TestSignInOtherClientsToken(t *testing.T) {
	ln, base := appListener(t)
	op := oidctest.Start(t,
		storage.WebClient("web", "web-secret", base+"/callback"),
		storage.WebClient("other", "other-secret", base+"/callback"))
	other := startAppWith(t, op, ln, base, "other", "other-secret", nil)
	// A token of "other" handed to the verifier of "web".
	b := oidctest.NewBrowser()
	b.StopAt = "/"
	resp := b.LoginAtOP(t, other.URL+"/login", "jane.smith")
	resp.Body.Close()
	who := other.signedIn()
	if len(who) != 1 {
		t.Fatalf("sign-in at other failed: %v", other.lastErr())
	}
	web, err := identity.Connect(context.Background(), identity.ProviderOptions{Issuer: op.Issuer, ClientID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = web.Verify(context.Background(), who[0].IDToken, "")
	if !errors.Is(err, identity.ErrAudience) {
		t.Errorf("got %v, want ErrAudience", err)
	}
}

func TestSignInKeyRotation(t *testing.T) {
	app := startApp(t, nil)
	for i := 0; i < 2; i++ {
		b := oidctest.NewBrowser()
		b.StopAt = "/"
		resp := b.LoginAtOP(t, app.URL+"/login", "jane.smith")
		resp.Body.Close()
		if n := len(app.signedIn()); n != i+1 {
			t.Fatalf("sign-in %d refused: %v", i+1, app.lastErr())
		}
		app.op.Rotate(t) // the next sign-in is signed by a key the verifier has not seen
	}
}

func TestSignInLogoutURL(t *testing.T) {
	app := startApp(t, nil)
	b := oidctest.NewBrowser()
	b.StopAt = "/"
	resp := b.LoginAtOP(t, app.URL+"/login", "jane.smith")
	resp.Body.Close()
	who := app.signedIn()
	if len(who) != 1 {
		t.Fatalf("sign-in refused: %v", app.lastErr())
	}
	u, err := app.signIn.LogoutURL(who[0].IDToken, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, app.op.Issuer) {
		t.Fatalf("logout URL %q is not at the OP", u)
	}
	b.StopAt = ""
	resp, err = b.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "signed out") {
		t.Errorf("the OP did not sign out: %d %q", resp.StatusCode, body)
	}
}

func TestVerifyRefusals(t *testing.T) {
	app := startApp(t, nil)
	op := app.op
	now := time.Now()
	good := func() map[string]any {
		return map[string]any{"iss": op.Issuer, "sub": "id-jane", "aud": []string{"web"}, "azp": "web",
			"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nonce": "n-1"}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	ctx := context.Background()
	// The good token verifies, so each refusal below is for its one difference.
	if _, err := app.p.Verify(ctx, op.Sign(t, nil, good()), "n-1"); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
	stranger := oidctest.NewKey(t)
	cases := []struct {
		name  string
		raw   string
		nonce string
		want  error
	}{
		{"wrong issuer", op.Sign(t, nil, with("iss", "https://idp.evil.example")), "n-2", identity.ErrIssuer},
		{"wrong audience", op.Sign(t, nil, with("aud", []string{"someone-else"})), "n-2", identity.ErrAudience},
		{"for another client (azp)", op.Sign(t, nil, func() map[string]any {
			c := with("aud", []string{"web", "other"})
			c["azp"] = "other"
			return c
		}()), "n-2", identity.ErrAuthorizedParty},
		{"expired", op.Sign(t, nil, with("exp", now.Add(-2*time.Minute).Unix())), "n-2", identity.ErrExpired},
		{"no expiry", op.Sign(t, nil, with("exp", nil)), "n-2", identity.ErrExpired},
		{"issued in the future", op.Sign(t, nil, with("iat", now.Add(10*time.Minute).Unix())), "n-2", identity.ErrNotYetValid},
		{"wrong nonce", op.Sign(t, nil, good()), "n-other", identity.ErrNonce},
		{"replayed nonce", op.Sign(t, nil, good()), "n-1", identity.ErrReplayed},
		{"alg none", unsigned(good()), "n-2", identity.ErrAlgorithm},
		{"alg HS256", hs256(t, good()), "n-2", identity.ErrAlgorithm},
		{"key not in JWKS", op.Sign(t, stranger, good()), "n-2", identity.ErrSignature},
		{"known kid, other key", op.Sign(t, stranger.WithID(op.CurrentKey().ID()), good()), "n-2", identity.ErrSignature},
		{"garbage", "not.a.token", "", identity.ErrMalformedToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := app.p.Verify(ctx, c.raw, c.nonce)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), c.raw) {
				t.Error("the error text holds the token")
			}
		})
	}
}

func TestVerifyClockSkew(t *testing.T) {
	app := startApp(t, nil)
	now := time.Now()
	// Expired 30 seconds ago, issued 30 seconds "in the future": within the minute of skew.
	raw := app.op.Sign(t, nil, map[string]any{"iss": app.op.Issuer, "sub": "s", "aud": "web",
		"exp": now.Add(-30 * time.Second).Unix(), "iat": now.Add(30 * time.Second).Unix()})
	if _, err := app.p.Verify(context.Background(), raw, ""); err != nil {
		t.Fatalf("token within the skew refused: %v", err)
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// unsigned is a JWT with alg "none".
func unsigned(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(payload) + "."
}

// hs256 is a JWT signed with HMAC under the client secret, which a verifier must not accept
// for an ID token signed by the provider's keys.
func hs256(t *testing.T, claims map[string]any) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("web-secret-web-secret-web-secret")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := jws.CompactSerialize()
	return raw
}

// TestSignInLogsNoSecrets signs in, then fails three callbacks, with the sign-in's logger
// captured: no token, code, state or nonce may appear in the log or in an error's text.
func TestSignInLogsNoSecrets(t *testing.T) {
	logger, logs := logtest.Capture()
	ln, base := appListener(t)
	op := oidctest.Start(t, storage.WebClient("web", "web-secret", base+"/callback"))
	p, err := identity.Connect(context.Background(), identity.ProviderOptions{Issuer: op.Issuer, ClientID: "web", ClientSecret: "web-secret", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var who *identity.Identity
	var errs []error
	var mu sync.Mutex
	si, err := identity.NewSignIn(p, identity.SignInOptions{RedirectURL: base + "/callback",
		CookieKey: []byte("0123456789abcdef0123456789abcdef"),
		OnSignIn: func(w http.ResponseWriter, r *http.Request, i *identity.Identity) {
			mu.Lock()
			who = i
			mu.Unlock()
			// The application logs the identity as a user would: LogValue keeps tokens out.
			logger.Info("session", "who", i)
			io.WriteString(w, "ok")
		},
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			http.Error(w, "no", http.StatusBadRequest)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/login", si.Login())
	mux.Handle("/callback", si.Callback())
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	app := &webApp{URL: base}

	b := oidctest.NewBrowser()
	cb := stopAtCallback(t, app, b, "jane.smith")
	b.StopAt = ""
	getStatus(t, b.Client, cb)           // signs in
	getStatus(t, b.Client, cb)           // replay without cookie
	getStatus(t, http.DefaultClient, cb) // no cookie
	b2 := oidctest.NewBrowser()
	cb2 := stopAtCallback(t, app, b2, "jane.smith")
	b2.StopAt = ""
	getStatus(t, b2.Client, strings.Replace(cb2, "code=", "code=x", 1)) // a code the OP refuses
	mu.Lock()
	defer mu.Unlock()
	if who == nil || len(errs) != 3 {
		t.Fatalf("signed in: %v, %d errors: %v", who != nil, len(errs), errs)
	}
	u := mustURL(t, cb)
	u2 := mustURL(t, cb2)
	secrets := map[string]string{
		"ID token": who.IDToken, "access token": who.Token.AccessToken,
		"code": u.Query().Get("code"), "state": u.Query().Get("state"),
		"second code": u2.Query().Get("code"), "second state": u2.Query().Get("state"),
		"client secret": "web-secret",
	}
	if rt := who.Token.RefreshToken; rt != "" {
		secrets["refresh token"] = rt
	}
	var texts strings.Builder
	for _, e := range errs {
		texts.WriteString(e.Error() + "\n")
	}
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("no %s to look for", name)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds the %s", name)
		}
		if strings.Contains(texts.String(), s) {
			t.Errorf("an error's text holds the %s", name)
		}
	}
	if !strings.Contains(logs.String(), "sign-in refused") || !strings.Contains(logs.String(), "id-jane") {
		t.Error("the log does not say what happened")
	}
}

func FuzzCallbackQuery(f *testing.F) {
	for _, s := range []string{"code=abc&state=xyz", "state=x&code=y&code=z", "error=access_denied&error_description=%ZZ",
		"code=" + strings.Repeat("a", 3000) + "&state=s", "%", "code=&state=", ";;;", "state=\x00&code=\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := identity.ParseCallbackQuery(raw)
		if err != nil {
			if !errors.Is(err, identity.ErrBadCallback) && !errors.Is(err, identity.ErrDenied) {
				t.Fatalf("%q: untyped error %v", raw, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("%q: error text of %d bytes", raw, len(err.Error()))
			}
			return
		}
		if q.Code == "" || q.State == "" || len(q.Code) > 2048 || len(q.State) > 2048 {
			t.Fatalf("%q: accepted %q %q", raw, q.Code, q.State)
		}
		vals, perr := url.ParseQuery(raw)
		if perr != nil || vals.Get("code") != q.Code || vals.Get("state") != q.State {
			t.Fatalf("%q: parsed %+v, url.ParseQuery says %v %v", raw, q, vals, perr)
		}
	})
}
