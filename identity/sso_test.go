package identity_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/matrix"
)

// ssoFront is a test homeserver front with the legacy m.login.sso: its redirect signs the user
// in at the real OP (with this package's SignIn, as a homeserver's OIDC module does), then
// sends a one-time loginToken to the client's redirectUrl, which POST /login takes. Dendrite
// has no SSO, so a front it is; nothing but login and whoami is served.
type ssoFront struct {
	URL string

	mu       sync.Mutex
	pending  map[string]string // return_to key -> the client's redirectUrl
	tokens   map[string]string // loginToken -> user ID, used once
	sessions map[string]string // access token -> user ID
}

func startSSOFront(t *testing.T) *ssoFront {
	t.Helper()
	ln, base := appListener(t)
	o := oidctest.Start(t, storage.WebClient("homeserver", "hs-secret", base+"/callback"))
	f := &ssoFront{URL: base, pending: map[string]string{}, tokens: map[string]string{}, sessions: map[string]string{}}
	p, err := identity.Connect(context.Background(), identity.ProviderOptions{Issuer: o.Issuer, ClientID: "homeserver", ClientSecret: "hs-secret"})
	if err != nil {
		t.Fatal(err)
	}
	si, err := identity.NewSignIn(p, identity.SignInOptions{RedirectURL: base + "/callback",
		CookieKey: []byte("homeserver-cookie-key-0123456789"),
		Mapper:    &identity.Mapper{Server: "front.test"},
		OnSignIn: func(w http.ResponseWriter, r *http.Request, who *identity.Identity) {
			key := strings.TrimPrefix(who.ReturnTo, "/done/")
			f.mu.Lock()
			redirect := f.pending[key]
			delete(f.pending, key)
			tok := "lt-" + randomID()
			f.tokens[tok] = string(who.MatrixID)
			f.mu.Unlock()
			if redirect == "" {
				http.Error(w, "unknown sign-on", 400)
				return
			}
			http.Redirect(w, r, redirect+"&loginToken="+url.QueryEscape(tok), http.StatusFound)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/callback", si.Callback())
	mux.HandleFunc("GET /_matrix/client/v3/login", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"flows": []map[string]any{{"type": "m.login.sso"}, {"type": "m.login.token"}}})
	})
	mux.HandleFunc("GET /_matrix/client/v3/login/sso/redirect", func(w http.ResponseWriter, r *http.Request) {
		key := randomID()
		f.mu.Lock()
		f.pending[key] = r.URL.Query().Get("redirectUrl")
		f.mu.Unlock()
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = url.Values{"return_to": {"/done/" + key}}.Encode()
		si.Login().ServeHTTP(w, r2)
	})
	mux.HandleFunc("POST /_matrix/client/v3/login", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Type, Token string
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		user, ok := f.tokens[req.Token]
		delete(f.tokens, req.Token)
		access := "at-" + randomID()
		if ok {
			f.sessions[access] = user
		}
		f.mu.Unlock()
		if req.Type != "m.login.token" || !ok {
			writeJSON(w, 403, map[string]any{"errcode": "M_FORBIDDEN", "error": "invalid login token"})
			return
		}
		writeJSON(w, 200, map[string]any{"user_id": user, "access_token": access, "device_id": "SSODEV"})
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		user, ok := f.sessions[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		f.mu.Unlock()
		if !ok {
			writeJSON(w, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "unknown token"})
			return
		}
		writeJSON(w, 200, map[string]any{"user_id": user, "device_id": "SSODEV"})
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func TestLegacySSO(t *testing.T) {
	f := startSSOFront(t)
	db := openDB(t)
	c, err := matrix.New(context.Background(), matrix.Options{HomeserverURL: f.URL, DB: db,
		Login: identity.LegacySSO(identity.SSOOptions{Open: func(ctx context.Context, u string) error {
			return oidctest.Browse(u, "jane.smith")
		}})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.UserID() != "@jane.smith:front.test" || c.DeviceID() != "SSODEV" {
		t.Errorf("logged in as %s %s", c.UserID(), c.DeviceID())
	}
}

func TestLegacySSORefusesForeignToken(t *testing.T) {
	f := startSSOFront(t)
	db := openDB(t)
	// Something other than the homeserver calls the loopback with a token of its choosing.
	_, err := matrix.New(context.Background(), matrix.Options{HomeserverURL: f.URL, DB: db,
		Login: identity.LegacySSO(identity.SSOOptions{Open: func(ctx context.Context, u string) error {
			ru, _ := url.Parse(u)
			redirect, _ := url.Parse(ru.Query().Get("redirectUrl"))
			redirect.RawQuery = "loginToken=planted"
			resp, err := http.Get(redirect.String())
			if err == nil {
				resp.Body.Close()
			}
			return err
		}})})
	if !errors.Is(err, identity.ErrState) || !errors.Is(err, matrix.ErrLogin) {
		t.Fatalf("got %v, want ErrState", err)
	}
}

func TestOAuthFallsBackWhenAbsent(t *testing.T) {
	f := startSSOFront(t) // a homeserver with no auth_metadata
	db := openDB(t)
	_, err := matrix.New(context.Background(), matrix.Options{HomeserverURL: f.URL, DB: db,
		Login: identity.OAuth(identity.OAuthOptions{DB: db, Open: func(context.Context, string) error { return nil }})})
	if !errors.Is(err, identity.ErrNoOAuth) {
		t.Fatalf("got %v, want ErrNoOAuth", err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
