package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/samtalhq/samtal/identity"
)

// testIdP signs logout tokens with a key it publishes as a JWKS from a local HTTP server, as
// an IdP's jwks_uri does. It is not a whole OpenID provider (the sign-in tests of this package
// run one): back-channel logout needs only the keys and the tokens, which are made here with
// go-jose as an IdP makes them.
type testIdP struct {
	issuer string
	key    *rsa.PrivateKey
	kid    string
	jwks   *httptest.Server
}

func newTestIdP(t *testing.T) *testIdP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	idp := &testIdP{issuer: "https://idp.agency-a.test", key: key, kid: "key-1"}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: idp.kid, Algorithm: "RS256", Use: "sig"}}}
	idp.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(idp.jwks.Close)
	return idp
}

func (idp *testIdP) sign(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader("kid", idp.kid))
	must(t, err)
	payload, err := json.Marshal(claims)
	must(t, err)
	obj, err := signer.Sign(payload)
	must(t, err)
	s, err := obj.CompactSerialize()
	must(t, err)
	return s
}

func (idp *testIdP) claims(jti string) map[string]any {
	return map[string]any{
		"iss": idp.issuer, "aud": "samtal", "iat": time.Now().Unix(), "jti": jti,
		"sub": "user-4711", "sid": "session-1",
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

func TestBackChannelLogout(t *testing.T) {
	idp := newTestIdP(t)
	var mu sync.Mutex
	var got []identity.LogoutEvent
	h, err := identity.NewBackChannelLogout(identity.BackChannelOptions{
		Issuer: idp.issuer, ClientID: "samtal", Keys: oidc.NewRemoteKeySet(context.Background(), idp.jwks.URL),
		OnLogout: func(_ context.Context, e identity.LogoutEvent) error {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
			return nil
		},
	})
	must(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(token string) int {
		resp, err := http.PostForm(srv.URL, url.Values{"logout_token": {token}})
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	good := idp.sign(t, idp.key, idp.claims("jti-1"))
	if code := post(good); code != http.StatusOK {
		t.Fatalf("a valid logout token: %d, want 200", code)
	}
	if len(got) != 1 || got[0].Subject != "user-4711" || got[0].SessionID != "session-1" {
		t.Fatalf("OnLogout got %+v", got)
	}

	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	mutate := func(f func(c map[string]any)) string {
		c := idp.claims("jti-" + time.Now().Format("150405.000000000"))
		f(c)
		return idp.sign(t, idp.key, c)
	}
	bad := map[string]string{
		"replayed":         good,
		"forged":           idp.sign(t, forger, idp.claims("jti-forged")),
		"wrong issuer":     mutate(func(c map[string]any) { c["iss"] = "https://evil.test" }),
		"wrong audience":   mutate(func(c map[string]any) { c["aud"] = "someone-else" }),
		"with a nonce":     mutate(func(c map[string]any) { c["nonce"] = "n" }),
		"no events":        mutate(func(c map[string]any) { delete(c, "events") }),
		"wrong event":      mutate(func(c map[string]any) { c["events"] = map[string]any{"urn:other": map[string]any{}} }),
		"no sub nor sid":   mutate(func(c map[string]any) { delete(c, "sub"); delete(c, "sid") }),
		"no jti":           mutate(func(c map[string]any) { delete(c, "jti") }),
		"no iat":           mutate(func(c map[string]any) { delete(c, "iat") }),
		"too old":          mutate(func(c map[string]any) { c["iat"] = time.Now().Add(-time.Hour).Unix() }),
		"expired":          mutate(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }),
		"not a JWT":        "not-a-jwt",
		"empty":            "",
		"tampered payload": good[:strings.Index(good, ".")+1] + "eyJpc3MiOiJ4In0" + good[strings.LastIndex(good, "."):],
	}
	for name, token := range bad {
		if code := post(token); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
		if _, err := h.Verify(t.Context(), token); !errors.Is(err, identity.ErrLogoutToken) {
			t.Errorf("%s: Verify = %v, want ErrLogoutToken", name, err)
		} else if token != "" && strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error holds the token", name)
		}
	}
	if len(got) != 1 {
		t.Fatalf("OnLogout called %d times, want once (for the valid token only)", len(got))
	}
}
