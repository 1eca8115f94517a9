package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// ErrTermsNotAccepted: the identity server asks for its terms of service to be accepted, and
// IdentityServerOptions.AcceptTerms is off.
var ErrTermsNotAccepted = errors.New("identity: the identity server's terms are not accepted")

// HashAddress returns the identity server v2 lookup hash of an address: the unpadded URL-safe
// base64 of SHA-256 over "ADDRESS MEDIUM PEPPER" (medium "email" or "msisdn").
func HashAddress(address, medium, pepper string) string {
	sum := sha256.Sum256([]byte(address + " " + medium + " " + pepper))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// IdentityServerOptions configure an IdentityServer. The zero value is a working default that
// does not accept terms of service on the user's behalf.
type IdentityServerOptions struct {
	HTTPClient  *http.Client // nil means one with a 30-second timeout
	BatchSize   int          // addresses per lookup request; 0 means 1,000
	AcceptTerms bool         // accept the server's terms of service when it asks
}

// IdentityServer resolves through a Matrix identity server's v2 hashed lookup
// (/_matrix/identity/v2/lookup): addresses leave this process only as hashes with the
// server's pepper. It registers with the server using an OpenID token from c's homeserver,
// accepts the terms if allowed, fetches the pepper again when the server rotates it
// (M_INVALID_PEPPER), and looks addresses up in batches.
type IdentityServer struct {
	c     *matrix.Client
	base  string
	http  *http.Client
	opts  IdentityServerOptions
	mu    sync.Mutex // guards token and pepper; never held across I/O
	token string
	hd    *hashDetails
}

type hashDetails struct {
	Algorithms []string `json:"algorithms"`
	Pepper     string   `json:"lookup_pepper"`
}

// NewIdentityServer returns a resolver that asks the identity server at baseURL (such as
// https://id.agency.se) on behalf of c's user.
func NewIdentityServer(c *matrix.Client, baseURL string, opts IdentityServerOptions) *IdentityServer {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	return &IdentityServer{c: c, base: strings.TrimRight(baseURL, "/"), http: opts.HTTPClient, opts: opts}
}

// Name returns "identity-server".
func (s *IdentityServer) Name() string { return "identity-server" }

// Resolve looks one address up.
func (s *IdentityServer) Resolve(ctx context.Context, addr Address) (Match, error) {
	found, err := s.LookupBatch(ctx, []string{addr.Key()})
	if err != nil {
		return Match{}, err
	}
	uid, ok := found[addr.Key()]
	if !ok {
		return Match{}, fmt.Errorf("%w: the identity server has no binding for the address", ErrNotFound)
	}
	return Match{UserID: uid, Detail: "identity server " + s.base + ", hashed lookup"}, nil
}

// LookupBatch resolves many addresses, one request per BatchSize of them, and returns those
// that are bound (address in lower case -> user ID). Invalid addresses are skipped.
func (s *IdentityServer) LookupBatch(ctx context.Context, addresses []string) (map[string]id.UserID, error) {
	keys := make([]string, 0, len(addresses))
	for _, a := range addresses {
		if addr, err := ParseAddress(a); err == nil {
			keys = append(keys, addr.Key())
		}
	}
	out := make(map[string]id.UserID, len(keys))
	for batch := range slices.Chunk(keys, s.opts.BatchSize) {
		if err := s.lookup(ctx, batch, out, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *IdentityServer) lookup(ctx context.Context, batch []string, out map[string]id.UserID, retry bool) error {
	hd, err := s.hashDetails(ctx)
	if err != nil {
		return err
	}
	byHash := make(map[string]string, len(batch))
	hashes := make([]string, 0, len(batch))
	for _, a := range batch {
		h := HashAddress(a, "email", hd.Pepper)
		byHash[h] = a
		hashes = append(hashes, h)
	}
	var resp struct {
		Mappings map[string]id.UserID `json:"mappings"`
	}
	err = s.call(ctx, http.MethodPost, "/_matrix/identity/v2/lookup",
		map[string]any{"addresses": hashes, "algorithm": "sha256", "pepper": hd.Pepper}, &resp)
	var ie *identityError
	if retry && errors.As(err, &ie) && ie.ErrCode == "M_INVALID_PEPPER" {
		s.mu.Lock()
		s.hd = nil
		s.mu.Unlock()
		return s.lookup(ctx, batch, out, false)
	}
	if err != nil {
		return err
	}
	for h, uid := range resp.Mappings {
		if a, ok := byHash[h]; ok && matrix.ValidateUserID(uid) == nil {
			out[a] = uid
		}
	}
	return nil
}

func (s *IdentityServer) hashDetails(ctx context.Context) (hashDetails, error) {
	s.mu.Lock()
	hd := s.hd
	s.mu.Unlock()
	if hd != nil {
		return *hd, nil
	}
	var fresh hashDetails
	if err := s.call(ctx, http.MethodGet, "/_matrix/identity/v2/hash_details", nil, &fresh); err != nil {
		return hashDetails{}, err
	}
	if !slices.Contains(fresh.Algorithms, "sha256") {
		return hashDetails{}, fmt.Errorf("%w: the identity server offers %v, not sha256", ErrUnavailable, fresh.Algorithms)
	}
	if fresh.Pepper == "" {
		return hashDetails{}, fmt.Errorf("%w: the identity server sent an empty pepper", ErrUnavailable)
	}
	s.mu.Lock()
	s.hd = &fresh
	s.mu.Unlock()
	return fresh, nil
}

// identityError is an identity server's error answer.
type identityError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *identityError) Error() string {
	return fmt.Sprintf("identity server: HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

// call makes an authenticated request, registering first and accepting terms when the server
// asks (once each).
func (s *IdentityServer) call(ctx context.Context, method, path string, in, out any) error {
	for attempt := 0; ; attempt++ {
		token, err := s.accessToken(ctx)
		if err != nil {
			return err
		}
		err = s.do(ctx, method, path, token, in, out)
		var ie *identityError
		if attempt > 1 || !errors.As(err, &ie) {
			return err
		}
		switch {
		case ie.ErrCode == "M_TERMS_NOT_SIGNED":
			if !s.opts.AcceptTerms {
				return fmt.Errorf("%w: %w", ErrTermsNotAccepted, err)
			}
			if err := s.acceptTerms(ctx, token); err != nil {
				return err
			}
		case ie.Status == http.StatusUnauthorized:
			s.mu.Lock()
			s.token = ""
			s.mu.Unlock()
		default:
			return err
		}
	}
}

func (s *IdentityServer) accessToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	token := s.token
	s.mu.Unlock()
	if token != "" {
		return token, nil
	}
	oid, err := s.c.Mautrix().RequestOpenIDToken(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: OpenID token from the homeserver: %w", ErrUnavailable, err)
	}
	var reg struct {
		Token string `json:"token"`
	}
	if err := s.do(ctx, http.MethodPost, "/_matrix/identity/v2/account/register", "", oid, &reg); err != nil {
		return "", err
	}
	if reg.Token == "" {
		return "", fmt.Errorf("%w: the identity server registered us with an empty token", ErrUnavailable)
	}
	s.mu.Lock()
	s.token = reg.Token
	s.mu.Unlock()
	return reg.Token, nil
}

func (s *IdentityServer) acceptTerms(ctx context.Context, token string) error {
	var terms struct {
		Policies map[string]map[string]json.RawMessage `json:"policies"`
	}
	if err := s.do(ctx, http.MethodGet, "/_matrix/identity/v2/terms", "", nil, &terms); err != nil {
		return err
	}
	var urls []string
	for _, policy := range terms.Policies {
		for lang, raw := range policy {
			if lang == "version" {
				continue
			}
			var doc struct {
				URL string `json:"url"`
			}
			if json.Unmarshal(raw, &doc) == nil && doc.URL != "" {
				urls = append(urls, doc.URL)
			}
		}
	}
	slices.Sort(urls)
	return s.do(ctx, http.MethodPost, "/_matrix/identity/v2/terms", token, map[string]any{"user_accepts": urls}, nil)
}

// maxIdentityResponse bounds an identity server's answer (a lookup of 1,000 addresses is
// about 100 KiB).
const maxIdentityResponse = 16 << 20

func (s *IdentityServer) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrUnavailable, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxIdentityResponse))
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrUnavailable, method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		ie := &identityError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, ie)
		if resp.StatusCode >= 500 {
			return fmt.Errorf("%w: %s %s: %w", ErrUnavailable, method, path, ie)
		}
		return fmt.Errorf("%s %s: %w", method, path, ie)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: answer is not JSON: %v", ErrUnavailable, method, path, err)
	}
	return nil
}
