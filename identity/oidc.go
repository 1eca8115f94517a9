package identity

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Why an ID token was refused. Each is returned wrapped, with what a reader needs to find the
// cause (never the token itself).
var (
	ErrMalformedToken  = errors.New("identity: ID token is malformed")
	ErrAlgorithm       = errors.New("identity: ID token is signed with an algorithm the provider does not offer (or none)")
	ErrSignature       = errors.New("identity: ID token is not signed by a key in the provider's key set")
	ErrIssuer          = errors.New("identity: ID token is from another issuer")
	ErrAudience        = errors.New("identity: ID token is for another client")
	ErrAuthorizedParty = errors.New("identity: ID token was issued to another client (azp)")
	ErrExpired         = errors.New("identity: ID token has expired")
	ErrNotYetValid     = errors.New("identity: ID token is not valid yet")
	ErrNonce           = errors.New("identity: ID token has the wrong nonce")
	ErrReplayed        = errors.New("identity: sign-in was replayed")
)

// DefaultClockSkew is how far the clocks of the provider and this host may differ.
const DefaultClockSkew = time.Minute

// DefaultHTTPTimeout bounds each request to the provider when ProviderOptions.HTTPClient is
// nil.
const DefaultHTTPTimeout = 30 * time.Second

// asymmetric are the JWS algorithms an ID token may be signed with here: those verified with
// the provider's published keys. "none" and the HMAC family are never accepted.
var asymmetric = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// ProviderOptions configure Connect. Issuer and ClientID are required.
type ProviderOptions struct {
	Issuer       string        // the provider's issuer URL, exactly as in its discovery document
	ClientID     string        // this application's client ID at the provider
	ClientSecret string        // "" for a public client (PKCE only)
	ClockSkew    time.Duration // tolerated clock difference; 0 means DefaultClockSkew
	HTTPClient   *http.Client  // nil means http.DefaultClient's transport
	Timeout      time.Duration // of each request to the provider (also through HTTPClient); 0 means DefaultHTTPTimeout
	Logger       *slog.Logger  // nil means slog.Default()
	Now          func() time.Time
}

// Provider is an OpenID provider as one client sees it: its discovery document, its keys
// (fetched again when a token names a key not seen before, so a rotation needs no restart) and
// an ID token verifier. It is safe for concurrent use.
type Provider struct {
	p          *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	issuer     string
	clientID   string
	secret     string
	algs       []string
	skew       time.Duration
	now        func() time.Time
	client     *http.Client
	timeout    time.Duration
	log        *slog.Logger
	endSession string
	revocation string
	nonces     seen
}

// Connect reads the provider's discovery document.
func Connect(ctx context.Context, opts ProviderOptions) (*Provider, error) {
	if opts.Issuer == "" || opts.ClientID == "" {
		return nil, errors.New("identity: ProviderOptions.Issuer and ClientID are required")
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = DefaultClockSkew
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultHTTPTimeout
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	// Every request, including go-oidc's later key fetches, which carry no deadline of a
	// caller, ends after Timeout.
	opts.HTTPClient = withTimeout(opts.HTTPClient, opts.Timeout)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// go-oidc keeps this context for its later key fetches: it must carry the client and
	// must not end with the caller's request.
	keyCtx := oidc.ClientContext(context.WithoutCancel(ctx), opts.HTTPClient)
	reqCtx, cancel := context.WithTimeout(oidc.ClientContext(ctx, opts.HTTPClient), opts.Timeout)
	defer cancel()
	p, err := oidc.NewProvider(reqCtx, opts.Issuer)
	if isTimeout(ctx, err) {
		return nil, timeoutError("discover provider "+opts.Issuer, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: discover provider %s: %w", opts.Issuer, err)
	}
	var meta struct {
		Algs       []string `json:"id_token_signing_alg_values_supported"`
		EndSession string   `json:"end_session_endpoint"`
		Revocation string   `json:"revocation_endpoint"`
		JWKS       string   `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("identity: discovery document of %s: %w", opts.Issuer, err)
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(asymmetric, a) {
			algs = append(algs, a)
		}
	}
	if len(meta.Algs) == 0 {
		algs = []string{oidc.RS256} // the spec's mandatory default
	}
	if len(algs) == 0 {
		return nil, fmt.Errorf("%w: %s offers only %v", ErrAlgorithm, opts.Issuer, meta.Algs)
	}
	pr := &Provider{
		p: p, issuer: opts.Issuer, clientID: opts.ClientID, secret: opts.ClientSecret,
		algs: algs, skew: opts.ClockSkew, now: opts.Now, client: opts.HTTPClient, timeout: opts.Timeout,
		log: opts.Logger, endSession: meta.EndSession, revocation: meta.Revocation,
	}
	// The signature (and the algorithm, and the key's presence in the JWKS) is go-oidc's to
	// check; the claims are checked here, with the skew and with errors a caller can tell
	// apart.
	keys := timedKeySet{oidc.NewRemoteKeySet(keyCtx, meta.JWKS)}
	pr.verifier = oidc.NewVerifier(opts.Issuer, keys, &oidc.Config{
		ClientID: opts.ClientID, SupportedSigningAlgs: algs,
		SkipClientIDCheck: true, SkipExpiryCheck: true, SkipIssuerCheck: true,
	})
	return pr, nil
}

// Issuer is the provider's issuer URL.
func (p *Provider) Issuer() string { return p.issuer }

// ClientID is the client ID this Provider verifies tokens for.
func (p *Provider) ClientID() string { return p.clientID }

// Endpoint is the provider's OAuth 2.0 authorization and token endpoints.
func (p *Provider) Endpoint() oauth2.Endpoint { return p.p.Endpoint() }

// EndSessionURL is the provider's end_session_endpoint, "" when it has none.
func (p *Provider) EndSessionURL() string { return p.endSession }

// HTTPClient is the client every request to the provider goes through.
func (p *Provider) HTTPClient() *http.Client { return p.client }

// OAuth2Config is the x/oauth2 configuration of this client with the provider.
func (p *Provider) OAuth2Config(redirectURL string, scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: p.clientID, ClientSecret: p.secret, Endpoint: p.p.Endpoint(),
		RedirectURL: redirectURL, Scopes: scopes,
	}
}

// Context returns ctx carrying the provider's HTTP client, for x/oauth2 and go-oidc calls.
func (p *Provider) Context(ctx context.Context) context.Context {
	return context.WithValue(oidc.ClientContext(ctx, p.client), oauth2.HTTPClient, p.client)
}

// IDToken is a verified ID token.
type IDToken struct {
	*oidc.IDToken
	AuthorizedParty string // azp, "" when absent
}

// Verify checks raw, an ID token: its signature against the provider's keys with an
// algorithm the provider offers (never "none"), the issuer, that this client is the audience
// and, when azp is present or there are several audiences, the authorized party, the expiry
// and issue time within the clock skew, and, when nonce is not "", the nonce, which may be
// used once. Each refusal matches one of the Err* values of this package.
func (p *Provider) Verify(ctx context.Context, raw, nonce string) (*IDToken, error) {
	var fetch keyFetch
	t, err := p.verifier.Verify(context.WithValue(ctx, keyFetchKey{}, &fetch), raw)
	if err != nil {
		// go-oidc accepts only p.algs (never "none"); the header tells why it refused.
		if herr := p.checkHeader(raw); herr != nil {
			return nil, herr
		}
		if fetch.timedOut {
			return nil, timeoutError("the provider's key set", p.timeout)
		}
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if t.Issuer != p.issuer {
		return nil, fmt.Errorf("%w: expected %q, got %q", ErrIssuer, p.issuer, t.Issuer)
	}
	if !slices.Contains(t.Audience, p.clientID) {
		return nil, fmt.Errorf("%w: %q is not among %q", ErrAudience, p.clientID, t.Audience)
	}
	var extra struct {
		Azp string    `json:"azp"`
		Nbf *jsonTime `json:"nbf"`
	}
	if err := t.Claims(&extra); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedToken, err)
	}
	if (extra.Azp != "" || len(t.Audience) > 1) && extra.Azp != p.clientID {
		return nil, fmt.Errorf("%w: azp %q, this client is %q", ErrAuthorizedParty, extra.Azp, p.clientID)
	}
	now := p.now()
	if t.Expiry.IsZero() || !now.Add(-p.skew).Before(t.Expiry) {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	if t.IssuedAt.After(now.Add(p.skew)) {
		return nil, fmt.Errorf("%w: issued at %s", ErrNotYetValid, t.IssuedAt.UTC().Format(time.RFC3339))
	}
	if extra.Nbf != nil && time.Time(*extra.Nbf).After(now.Add(p.skew)) {
		return nil, fmt.Errorf("%w: not before %s", ErrNotYetValid, time.Time(*extra.Nbf).UTC().Format(time.RFC3339))
	}
	if nonce != "" {
		if subtle.ConstantTimeCompare([]byte(t.Nonce), []byte(nonce)) != 1 {
			return nil, ErrNonce
		}
		if !p.nonces.first(nonce, t.Expiry.Add(p.skew), now) {
			return nil, fmt.Errorf("%w: the ID token's nonce was used before", ErrReplayed)
		}
	}
	return &IDToken{IDToken: t, AuthorizedParty: extra.Azp}, nil
}

// checkHeader reports a token that is not a compact JWS, or whose JOSE header names an
// algorithm not allowed here.
func (p *Provider) checkHeader(raw string) error {
	dot := strings.IndexByte(raw, '.')
	if dot <= 0 || strings.Count(raw, ".") != 2 {
		return fmt.Errorf("%w: not a compact JWS", ErrMalformedToken)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(raw[:dot])
	if err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformedToken, err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformedToken, err)
	}
	if !slices.Contains(p.algs, h.Alg) {
		return fmt.Errorf("%w: %q (allowed: %v)", ErrAlgorithm, truncate(h.Alg, 16), p.algs)
	}
	return nil
}

// jsonTime is a NumericDate claim.
type jsonTime time.Time

func (j *jsonTime) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	f, err := n.Float64()
	if err != nil {
		return err
	}
	*j = jsonTime(time.Unix(int64(f), 0))
	return nil
}

// seen remembers values (nonces, states) until they expire, to refuse a second use.
type seen struct {
	mu     sync.Mutex
	until  map[string]time.Time
	sweeps int
}

// maxSeen bounds the memory of seen: past it the oldest are forgotten first, after expiry.
const maxSeen = 100_000

// first records v until expiry and reports whether v was new.
func (s *seen) first(v string, expiry, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.until == nil {
		s.until = map[string]time.Time{}
	}
	if t, ok := s.until[v]; ok && now.Before(t) {
		return false
	}
	s.sweeps++
	if s.sweeps >= 1024 || len(s.until) >= maxSeen {
		s.sweeps = 0
		for k, t := range s.until {
			if !now.Before(t) {
				delete(s.until, k)
			}
		}
	}
	s.until[v] = expiry
	return true
}

// timedKeySet is the provider's key set, telling Verify when a fetch of the keys timed out
// (go-oidc keeps only the text of the key set's error).
type timedKeySet struct{ oidc.KeySet }

type keyFetchKey struct{}

// keyFetch is how one Verify learns that its key fetch timed out.
type keyFetch struct{ timedOut bool }

func (k timedKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	b, err := k.KeySet.VerifySignature(ctx, jwt)
	if err != nil && isTimeout(ctx, err) {
		if f, ok := ctx.Value(keyFetchKey{}).(*keyFetch); ok {
			f.timedOut = true
		}
	}
	return b, err
}
