package identity_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

func TestHashAddressSpecVector(t *testing.T) {
	// The example of the identity service API's "Client behaviour" section, v1.x.
	got := identity.HashAddress("alice@example.com", "email", "matrixrocks")
	if want := "4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc"; got != want {
		t.Fatalf("HashAddress = %s, want the spec's %s", got, want)
	}
}

// testIdentityServer follows the identity service API v2 for what a lookup needs:
// account/register with an OpenID token (checked against the homeserver over the federation
// API's openid/userinfo, as a real identity server does), terms that must be accepted,
// hash_details, and lookup with the pepper, which it can rotate. No real identity server (sydent,
// ma1sd) runs on this machine, so this one stands in for it: it is written from the spec, not
// from a product.
type testIdentityServer struct {
	*httptest.Server
	hsName string // the homeserver's server name, where its federation API answers

	mu        sync.Mutex
	bindings  map[string]id.UserID // address -> user
	pepper    string
	tokens    map[string]bool
	accepted  map[string]bool // token -> terms accepted
	lookups   int             // lookup requests
	hashed    int             // addresses looked up
	registers int
}

const termsURL = "https://id.test/terms-v1.html"

func newTestIdentityServer(t testing.TB, hsName string, bindings map[string]id.UserID) *testIdentityServer {
	s := &testIdentityServer{hsName: hsName, bindings: bindings, pepper: "pepper-1", tokens: map[string]bool{}, accepted: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/identity/v2/account/register", s.register)
	mux.HandleFunc("GET /_matrix/identity/v2/terms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]any{"policies": map[string]any{"terms": map[string]any{
			"version": "1", "en": map[string]string{"name": "Terms", "url": termsURL}}}})
	})
	mux.HandleFunc("POST /_matrix/identity/v2/terms", s.authed(func(w http.ResponseWriter, r *http.Request, token string) {
		var req struct {
			Accepts []string `json:"user_accepts"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		s.mu.Lock()
		s.accepted[token] = len(req.Accepts) == 1 && req.Accepts[0] == termsURL
		s.mu.Unlock()
		reply(w, 200, map[string]any{})
	}))
	mux.HandleFunc("GET /_matrix/identity/v2/hash_details", s.authed(s.signed(func(w http.ResponseWriter, r *http.Request, _ string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		reply(w, 200, map[string]any{"algorithms": []string{"none", "sha256"}, "lookup_pepper": s.pepper})
	})))
	mux.HandleFunc("POST /_matrix/identity/v2/lookup", s.authed(s.signed(s.lookup)))
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *testIdentityServer) register(w http.ResponseWriter, r *http.Request) {
	var oid struct {
		AccessToken      string `json:"access_token"`
		MatrixServerName string `json:"matrix_server_name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&oid); err != nil || oid.AccessToken == "" {
		reply(w, 400, map[string]string{"errcode": "M_BAD_JSON", "error": "no OpenID token"})
		return
	}
	// The homeserver's federation listener has a self-signed certificate (matrixtest).
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get("https://" + s.hsName + "/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(oid.AccessToken))
	if err != nil {
		reply(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": err.Error()})
		return
	}
	defer resp.Body.Close()
	var info struct {
		Sub string `json:"sub"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&info) != nil || info.Sub == "" {
		reply(w, 401, map[string]string{"errcode": "M_UNAUTHORIZED", "error": "OpenID token not valid"})
		return
	}
	s.mu.Lock()
	s.registers++
	token := fmt.Sprintf("is-token-%d", s.registers)
	s.tokens[token] = true
	s.mu.Unlock()
	reply(w, 200, map[string]string{"token": token})
}

func (s *testIdentityServer) authed(next func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		ok := s.tokens[token]
		s.mu.Unlock()
		if !ok {
			reply(w, 401, map[string]string{"errcode": "M_UNAUTHORIZED", "error": "unknown token"})
			return
		}
		next(w, r, token)
	}
}

func (s *testIdentityServer) signed(next func(http.ResponseWriter, *http.Request, string)) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, token string) {
		s.mu.Lock()
		ok := s.accepted[token]
		s.mu.Unlock()
		if !ok {
			reply(w, 403, map[string]string{"errcode": "M_TERMS_NOT_SIGNED", "error": "accept the terms"})
			return
		}
		next(w, r, token)
	}
}

func (s *testIdentityServer) lookup(w http.ResponseWriter, r *http.Request, _ string) {
	var req struct {
		Addresses []string `json:"addresses"`
		Algorithm string   `json:"algorithm"`
		Pepper    string   `json:"pepper"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, 400, map[string]string{"errcode": "M_BAD_JSON", "error": "bad JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if req.Algorithm != "sha256" {
		reply(w, 400, map[string]string{"errcode": "M_INVALID_PARAM", "error": "algorithm"})
		return
	}
	if req.Pepper != s.pepper {
		reply(w, 400, map[string]any{"errcode": "M_INVALID_PEPPER", "error": "pepper", "algorithm": "sha256", "lookup_pepper": s.pepper})
		return
	}
	s.hashed += len(req.Addresses)
	hashes := map[string]id.UserID{}
	for addr, uid := range s.bindings {
		hashes[identity.HashAddress(addr, "email", s.pepper)] = uid
	}
	mappings := map[string]id.UserID{}
	for _, h := range req.Addresses {
		if uid, ok := hashes[h]; ok {
			mappings[h] = uid
		}
	}
	reply(w, 200, map[string]any{"mappings": mappings})
}

func (s *testIdentityServer) rotatePepper(p string) {
	s.mu.Lock()
	s.pepper = p
	s.mu.Unlock()
}

func (s *testIdentityServer) counts() (lookups, hashed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups, s.hashed
}

func TestIdentityServerLookup(t *testing.T) {
	// One server with its federation API on, which the identity server asks to check OpenID
	// tokens.
	srv := matrixtest.NewFederation(t, 1)[0]
	c := srv.NewClient(t, "officer")
	anna := srv.UserID("anna")
	is := newTestIdentityServer(t, srv.ServerName, map[string]id.UserID{"anna.berg@agency-a.test": anna})
	ctx := t.Context()

	t.Run("terms not accepted", func(t *testing.T) {
		r := identity.NewIdentityServer(c, is.URL, identity.IdentityServerOptions{})
		_, err := identity.NewDirectory(identity.DirectoryOptions{}, r).Lookup(ctx, "anna.berg@agency-a.test")
		if !errors.Is(err, identity.ErrTermsNotAccepted) {
			t.Fatalf("Lookup = %v, want ErrTermsNotAccepted", err)
		}
	})

	r := identity.NewIdentityServer(c, is.URL, identity.IdentityServerOptions{AcceptTerms: true, BatchSize: 100})
	dir := identity.NewDirectory(identity.DirectoryOptions{}, r)
	m, err := dir.Lookup(ctx, "Anna.Berg@Agency-A.test")
	if err != nil {
		t.Fatal(err)
	}
	if m.UserID != anna || m.Source != "identity-server" {
		t.Fatalf("Lookup = %+v, want %s from the identity server", m, anna)
	}
	if _, err := dir.Lookup(ctx, "nobody@agency-a.test"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("unbound address: %v, want ErrNotFound", err)
	}

	// The server rotates its pepper: the next lookup is refused with M_INVALID_PEPPER, and the
	// resolver fetches hash_details again and succeeds.
	is.rotatePepper("pepper-2")
	found, err := r.LookupBatch(ctx, []string{"anna.berg@agency-a.test"})
	if err != nil || found["anna.berg@agency-a.test"] != anna {
		t.Fatalf("after the pepper rotated: %v, %v", found, err)
	}

	// Batches: 250 addresses at 100 a batch are three requests.
	before, _ := is.counts()
	var many []string
	for i := range 249 {
		many = append(many, fmt.Sprintf("someone-%d@agency-a.test", i))
	}
	many = append(many, "anna.berg@agency-a.test")
	found, err = r.LookupBatch(ctx, many)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := is.counts()
	if len(found) != 1 || after-before != 3 {
		t.Fatalf("250 addresses: %d found in %d requests, want 1 in 3", len(found), after-before)
	}
}

// BenchmarkHashedLookup: 1,000 addresses through the hashed lookup in batches of 250, against
// the test identity server on loopback (its own hashing of its bindings included). Reports
// lookup requests per 1,000 addresses and addresses per second.
func BenchmarkHashedLookup(b *testing.B) {
	srv := matrixtest.NewFederation(b, 1)[0]
	c := srv.NewClient(b, "officer")
	bindings := map[string]id.UserID{}
	var addrs []string
	for i := range 1000 {
		a := fmt.Sprintf("officer%04d@agency-a.test", i)
		addrs = append(addrs, a)
		if i%10 == 0 {
			bindings[a] = id.UserID(fmt.Sprintf("@officer%04d:agency-a.test", i))
		}
	}
	is := newTestIdentityServer(b, srv.ServerName, bindings)
	r := identity.NewIdentityServer(c, is.URL, identity.IdentityServerOptions{AcceptTerms: true, BatchSize: 250})
	if _, err := r.LookupBatch(b.Context(), addrs[:1]); err != nil { // register, terms, pepper
		b.Fatal(err)
	}
	before, _ := is.counts()
	b.ResetTimer()
	for b.Loop() {
		found, err := r.LookupBatch(b.Context(), addrs)
		if err != nil || len(found) != 100 {
			b.Fatalf("found %d, %v", len(found), err)
		}
	}
	b.StopTimer()
	after, _ := is.counts()
	b.ReportMetric(float64(after-before)/float64(b.N), "requests/1000")
	b.ReportMetric(float64(1000*b.N)/b.Elapsed().Seconds(), "addresses/s")
}

// BenchmarkHashAddress is the client's own share of a lookup: one hash per address.
func BenchmarkHashAddress(b *testing.B) {
	for b.Loop() {
		identity.HashAddress("officer0001@agency-a.test", "email", "pepper-1")
	}
}
