// Package oidctest starts a real OpenID provider for a test: zitadel's example OP (its op
// package, login UI and in-memory storage, github.com/zitadel/oidc/v3) in this process on a
// loopback port, with signing keys held here so that a test can rotate them and sign tokens
// of its own. Front adds a test Matrix front that uses the OP as its OAuth 2.0 authorization
// server, for the Matrix OAuth API that no homeserver on our machines has.
//
//	op := oidctest.Start(t, storage.WebClient("web", "web-secret", base+"/callback"))
//	resp := oidctest.NewBrowser().LoginAtOP(t, base+"/login", "jane.smith")
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Password is the password of every User.
const Password = "verysecure"

// User is a person the OP knows.
type User struct {
	ID, Username, First, Last, Email string
}

// Users are the people of every OP started here.
var Users = []User{
	{"id-jane", "jane.smith", "Jane", "Smith", "jane.smith@example.se"},
	{"id-asa", "åsa.öberg", "Åsa", "Öberg", "asa.oberg@example.se"},
	{"id-asa2", "Åsa Öberg", "Åsa", "Öberg", "asa.oberg@other.se"},
	// The example OP's device grant takes the username as the subject.
	{"officer", "officer", "Olle", "Officer", "olle.officer@example.se"},
}

// OP is a running OpenID provider.
type OP struct {
	Issuer string
	store  *opStorage
}

// Start starts an OP with the given clients (made with the example storage's constructors,
// such as storage.WebClient), stopped when the test ends.
func Start(t testing.TB, clients ...*storage.Client) *OP {
	t.Helper()
	users := map[string]*storage.User{}
	for _, u := range Users {
		users[u.ID] = &storage.User{ID: u.ID, Username: u.Username, Password: Password, FirstName: u.First,
			LastName: u.Last, Email: u.Email, EmailVerified: true, PreferredLanguage: language.Swedish}
	}
	cs := map[string]*storage.Client{}
	for _, c := range clients {
		cs[c.GetID()] = c
	}
	st := &opStorage{Storage: storage.NewStorageWithClients(userStore{users}, cs), keys: []*SigningKey{NewKey(t)},
		clients: cs, registered: map[string]op.Client{}}
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
	return &OP{Issuer: issuer, store: st}
}

// SigningKey is an RSA signing key of the OP, or one it does not know.
type SigningKey struct {
	id  string
	key *rsa.PrivateKey
}

// NewKey makes a signing key with a random key ID.
func NewKey(t testing.TB) *SigningKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &SigningKey{id: "k-" + hex.EncodeToString(b), key: k}
}

// WithID is k under another key ID (to sign with a stranger's key under a known ID).
func (k *SigningKey) WithID(id string) *SigningKey { return &SigningKey{id: id, key: k.key} }

// SignatureAlgorithm implements op.SigningKey.
func (k *SigningKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }

// Algorithm implements op.Key.
func (k *SigningKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }

// ID is the key ID.
func (k *SigningKey) ID() string { return k.id }

// Use implements op.Key.
func (k *SigningKey) Use() string { return "sig" }

// Key is the private key to sign with; pubKey wraps it for the key set.
func (k *SigningKey) Key() any { return k.key }

type pubKey struct{ *SigningKey }

func (k pubKey) Key() any { return &k.key.PublicKey }

// CurrentKey is the key the OP signs with now.
func (o *OP) CurrentKey() *SigningKey {
	o.store.mu.Lock()
	defer o.store.mu.Unlock()
	return o.store.keys[0]
}

// Rotate makes the OP sign with a new key and drops the old one from its key set.
func (o *OP) Rotate(t testing.TB) {
	k := NewKey(t)
	o.store.mu.Lock()
	o.store.keys = []*SigningKey{k}
	o.store.mu.Unlock()
}

// Sign returns a compact JWS of claims signed with key (the OP's current key when nil).
func (o *OP) Sign(t testing.TB, key *SigningKey, claims map[string]any) string {
	t.Helper()
	if key == nil {
		key = o.CurrentKey()
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

// Register adds a client after the start, as dynamic client registration does; it may use
// the device grant.
func (o *OP) Register(c *storage.Client, grants ...string) {
	o.store.register(c, grants)
}

// LastClientID is the ID of the client registered last (by Register), "" before any.
func (o *OP) LastClientID() string {
	o.store.mu.Lock()
	defer o.store.mu.Unlock()
	ids := make([]string, 0, len(o.store.registered))
	for id := range o.store.registered {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}

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

// opStorage is the example storage with key management, dynamic clients and device-grant
// refresh tokens of our own.
type opStorage struct {
	*storage.Storage
	mu         sync.Mutex
	keys       []*SigningKey              // the first signs; all are published
	clients    map[string]*storage.Client // the example storage's own table
	registered map[string]op.Client       // registered after the start
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

// dynClient is a registered client: a client of the example storage with the grant types it
// asked for.
type dynClient struct {
	*storage.Client
	grants []string
}

func (c dynClient) GrantTypes() []oidc.GrantType {
	gs := make([]oidc.GrantType, len(c.grants))
	for i, g := range c.grants {
		gs[i] = oidc.GrantType(g)
	}
	return gs
}

func (s *opStorage) register(c *storage.Client, grants []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.registered[c.GetID()] = dynClient{c, grants}
	for _, g := range grants {
		if g == string(oidc.GrantTypeDeviceCode) {
			// The example storage's device endpoint looks in its own table. Nothing asks
			// the OP anything while a client registers (the tests run one flow at a time).
			s.clients[c.GetID()] = c
		}
	}
}

func (s *opStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	s.mu.Lock()
	c, ok := s.registered[clientID]
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	return s.Storage.GetClientByClientID(ctx, clientID)
}

// AuthorizeClientIDSecret lets the registered clients, public ones (RFC 8252), through
// without a secret, as the device endpoint asks.
func (s *opStorage) AuthorizeClientIDSecret(ctx context.Context, clientID, secret string) error {
	s.mu.Lock()
	_, ok := s.registered[clientID]
	s.mu.Unlock()
	if ok && secret == "" {
		return nil
	}
	return s.Storage.AuthorizeClientIDSecret(ctx, clientID, secret)
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
