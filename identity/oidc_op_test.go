package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// testOP is a real OpenID provider in this process: zitadel's example OP (its op package,
// login UI and in-memory storage) on a loopback port, with the signing keys held here so that
// a test can rotate them, and can sign tokens of its own to show what the verifier refuses.
type testOP struct {
	Issuer  string
	store   *opStorage
	clients map[string]*storage.Client // the example storage's own table, written only before use
}

// opUser is a person the test OP knows; the password of every one is "verysecure".
type opUser struct {
	ID, Username, First, Last, Email string
}

var opUsers = []opUser{
	{"id-jane", "jane.smith", "Jane", "Smith", "jane.smith@example.se"},
	{"id-asa", "åsa.öberg", "Åsa", "Öberg", "asa.oberg@example.se"},
	{"id-asa2", "Åsa Öberg", "Åsa", "Öberg", "asa.oberg@other.se"},
	// The example OP's device grant takes the username as the subject.
	{"officer", "officer", "Olle", "Officer", "olle.officer@example.se"},
}

const opPassword = "verysecure"

type userStore struct{ users map[string]*storage.User }

func (u userStore) GetUserByID(id string) *storage.User { return u.users[id] }
func (u userStore) GetUserByUsername(name string) *storage.User {
	for _, v := range u.users {
		if v.Username == name {
			return v
		}
	}
	return nil
}
func (userStore) ExampleClientID() string { return "service" }

// signKey is an RSA signing key of the test OP.
type signKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signKey) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k *signKey) ID() string                                  { return k.id }
func (k *signKey) Use() string                                 { return "sig" }

// Key is the private key to sign with; pubKey wraps it for the key set.
func (k *signKey) Key() any { return k.key }

type pubKey struct{ *signKey }

func (k pubKey) Key() any { return &k.key.PublicKey }

// opStorage is the example storage with key management of our own.
type opStorage struct {
	*storage.Storage
	mu   sync.Mutex
	keys []*signKey // the first signs; all are published
}

func newSignKey(t testing.TB) *signKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &signKey{id: "k-" + strings.ToLower(strings.TrimRight(jsonB64(b), "=")), key: k}
}

func jsonB64(b []byte) string {
	const hex = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, hex[c>>4], hex[c&15])
	}
	return string(s)
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0], nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ks []op.Key
	for _, k := range s.keys {
		ks = append(ks, pubKey{k})
	}
	return ks, nil
}

// CreateAccessAndRefreshTokens gives the device grant refresh tokens that refresh: the example
// storage files a device grant's refresh token under no client (it knows the client of a code
// grant and of a refresh only), so that a refresh by the client that holds it is refused with
// invalid_grant. Here a device grant is handed on as the refresh request of its own client and
// subject, from which the storage makes a new pair.
func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, request op.TokenRequest, currentRefreshToken string) (string, string, time.Time, error) {
	if d, ok := request.(*op.DeviceAuthorizationState); ok && currentRefreshToken == "" {
		request = storage.RefreshTokenRequestFromBusiness(&storage.RefreshToken{
			ApplicationID: d.ClientID, UserID: d.Subject, Audience: d.Audience, Scopes: d.Scopes,
			AuthTime: d.AuthTime, AMR: d.AMR,
		})
	}
	return s.Storage.CreateAccessAndRefreshTokens(ctx, request, currentRefreshToken)
}

// current is the key the OP signs with now.
func (o *testOP) current() *signKey {
	o.store.mu.Lock()
	defer o.store.mu.Unlock()
	return o.store.keys[0]
}

// rotate makes the OP sign with a new key and drops the old one from its key set.
func (o *testOP) rotate(t testing.TB) {
	k := newSignKey(t)
	o.store.mu.Lock()
	o.store.keys = []*signKey{k}
	o.store.mu.Unlock()
}

// startOP starts the test OP with the given clients; they are built with the issuer-less
// constructors of the example storage.
func startOP(t testing.TB, clients ...*storage.Client) *testOP {
	t.Helper()
	users := map[string]*storage.User{}
	for _, u := range opUsers {
		users[u.ID] = &storage.User{ID: u.ID, Username: u.Username, Password: opPassword, FirstName: u.First,
			LastName: u.Last, Email: u.Email, EmailVerified: true, PreferredLanguage: language.Swedish}
	}
	cs := map[string]*storage.Client{}
	for _, c := range clients {
		cs[c.GetID()] = c
	}
	st := &opStorage{Storage: storage.NewStorageWithClients(userStore{users}, cs), keys: []*signKey{newSignKey(t)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	srv := httptest.NewUnstartedServer(nil)
	srv.Listener.Close()
	srv.Listener = ln
	// A nil logger: the example would otherwise replace the process's default logger.
	srv.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	srv.Start()
	t.Cleanup(srv.Close)
	return &testOP{Issuer: issuer, store: st, clients: cs}
}

// sign returns a compact JWS of claims signed with key (the OP's current key when nil).
func (o *testOP) sign(t testing.TB, key *signKey, claims map[string]any) string {
	t.Helper()
	if key == nil {
		key = o.current()
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.id))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
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

// browser is a user agent with a cookie jar that stops before following a redirect to a URL
// whose path is stopAt (so that a test can look at, replay or alter the callback).
type browser struct {
	*http.Client
	stopAt string
}

func newBrowser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{}
	b.Client = &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if b.stopAt != "" && req.URL.Path == b.stopAt {
			return http.ErrUseLastResponse
		}
		if len(via) > 20 {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

// loginAtOP starts at start (the application's /login), signs in at the OP's login page as
// username and returns the last response: the application's answer, or the redirect to
// b.stopAt.
func (b *browser) loginAtOP(t testing.TB, start, username string) *http.Response {
	t.Helper()
	resp, err := b.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	authID := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || authID == "" {
		t.Fatalf("expected the OP's login page, got %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
	form := url.Values{"username": {username}, "password": {opPassword}, "id": {authID}}
	loginURL := *resp.Request.URL
	loginURL.RawQuery = ""
	resp, err = b.PostForm(loginURL.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// callbackURL is where a response stopped at b.stopAt would have gone.
func callbackURL(t testing.TB, resp *http.Response) string {
	t.Helper()
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("expected a redirect to the callback, got %d: %v", resp.StatusCode, err)
	}
	return loc.String()
}
