package identity

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"maunium.net/go/mautrix/id"
)

// Why a callback was refused, besides the ID token errors of Provider.Verify.
var (
	ErrNoCookie      = errors.New("identity: callback without the sign-in cookie (expired, another browser, or not started here)")
	ErrBadCookie     = errors.New("identity: sign-in cookie was altered or is from another key")
	ErrState         = errors.New("identity: callback state does not match the sign-in")
	ErrBadCallback   = errors.New("identity: callback query is malformed")
	ErrDenied        = errors.New("identity: the provider refused the sign-in")
	ErrCodeExchange  = errors.New("identity: the provider refused the authorization code")
	ErrNoIDToken     = errors.New("identity: the provider's token response has no ID token")
	ErrSubjectChange = errors.New("identity: userinfo is for another subject than the ID token")
)

// DefaultCookieName is the sign-in cookie's name.
const DefaultCookieName = "samtal_signin"

// DefaultSignInTimeout is how long a sign-in may take from /login to /callback.
const DefaultSignInTimeout = 10 * time.Minute

// maxQuery bounds the callback's query string; a real one is a few hundred bytes.
const maxQuery = 8 << 10

// maxParam bounds one value of the callback's query.
const maxParam = 2048

// SignInOptions configure a SignIn. RedirectURL and CookieKey are required.
type SignInOptions struct {
	RedirectURL string        // this application's callback URL, as registered at the provider
	CookieKey   []byte        // at least 32 random bytes; seals the sign-in cookie
	Scopes      []string      // nil means openid, profile and email
	CookieName  string        // "" means DefaultCookieName
	Timeout     time.Duration // how long a sign-in may take; 0 means DefaultSignInTimeout
	Mapper      *Mapper       // maps the claims to a Matrix ID; nil leaves Identity.MatrixID empty
	// OnSignIn is the session hook: it is called after a verified sign-in and writes the
	// response (typically sets the application's own session cookie and redirects to
	// Identity.ReturnTo). nil redirects to ReturnTo.
	OnSignIn func(w http.ResponseWriter, r *http.Request, who *Identity)
	// OnError writes the response to a refused callback; err matches one of this package's
	// errors. nil answers 400 (or 502 when the provider failed) with a short text.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
	Logger  *slog.Logger // nil means the provider's
}

// SignIn is the sign-in of a web application's users with the agency's provider: Login
// starts it, Callback finishes it. It is safe for concurrent use.
type SignIn struct {
	p      *Provider
	cfg    *oauth2.Config
	opts   SignInOptions
	aead   cipher.AEAD
	secure bool
	path   string
	states seen
	log    *slog.Logger
}

// Identity is a signed-in person. Its tokens are for the application to keep server side:
// never put them in a page, a URL or a log (LogValue leaves them out).
type Identity struct {
	Issuer      string
	Subject     string
	Claims      map[string]any // the ID token's claims, completed by userinfo
	MatrixID    id.UserID      // from SignInOptions.Mapper; "" without one
	DisplayName string         // from SignInOptions.Mapper
	ReturnTo    string         // the local path the sign-in was started from
	IDToken     string         // the raw ID token: the id_token_hint of LogoutURL
	Token       *oauth2.Token  // the provider's access (and refresh) token
}

// LogValue implements slog.LogValuer without the tokens.
func (i *Identity) LogValue() slog.Value {
	return slog.GroupValue(slog.String("issuer", i.Issuer), slog.String("subject", i.Subject),
		slog.String("matrix_id", string(i.MatrixID)))
}

// NewSignIn returns the sign-in handlers for p.
func NewSignIn(p *Provider, opts SignInOptions) (*SignIn, error) {
	if len(opts.CookieKey) < 32 {
		return nil, errors.New("identity: SignInOptions.CookieKey needs at least 32 random bytes")
	}
	u, err := url.Parse(opts.RedirectURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("identity: SignInOptions.RedirectURL %q is not an absolute http(s) URL", opts.RedirectURL)
	}
	if opts.Scopes == nil {
		opts.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	if opts.CookieName == "" {
		opts.CookieName = DefaultCookieName
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultSignInTimeout
	}
	if opts.Logger == nil {
		opts.Logger = p.log
	}
	key := sha256.Sum256(append([]byte("samtal identity sign-in cookie\x00"), opts.CookieKey...))
	block, _ := aes.NewCipher(key[:])
	aead, _ := cipher.NewGCM(block)
	path := u.Path
	if path == "" {
		path = "/"
	}
	return &SignIn{p: p, cfg: p.OAuth2Config(opts.RedirectURL, opts.Scopes), opts: opts, aead: aead,
		secure: u.Scheme == "https", path: path, log: opts.Logger}, nil
}

// pending is what the sign-in cookie carries from Login to Callback.
type pending struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Expires  int64  `json:"e"`
}

// Login is the /login handler: it redirects to the provider with a new state, nonce and PKCE
// challenge (S256), kept in a short-lived, sealed, HttpOnly cookie. The query parameter
// return_to, a local path, is where OnSignIn is told to send the user afterwards.
func (s *SignIn) Login() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pd := pending{
			State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(),
			ReturnTo: localPath(r.URL.Query().Get("return_to")),
			Expires:  s.p.now().Add(s.opts.Timeout).Unix(),
		}
		http.SetCookie(w, s.cookie(s.seal(pd), int(s.opts.Timeout/time.Second)))
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, s.cfg.AuthCodeURL(pd.State, oidc.Nonce(pd.Nonce), oauth2.S256ChallengeOption(pd.Verifier)), http.StatusFound)
	})
}

// Callback is the /callback handler: it checks the state against the cookie, exchanges the
// code with the PKCE verifier, verifies the ID token (Provider.Verify, with the cookie's
// nonce), completes the claims from userinfo, maps them (SignInOptions.Mapper) and calls
// OnSignIn. A state is accepted once.
func (s *SignIn) Callback() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, s.cookie("", -1)) // used once, whatever happens
		w.Header().Set("Cache-Control", "no-store")
		who, err := s.finish(r.Context(), r)
		if err != nil {
			s.log.WarnContext(r.Context(), "sign-in refused", "err", err)
			if s.opts.OnError != nil {
				s.opts.OnError(w, r, err)
				return
			}
			status := http.StatusBadRequest
			if errors.Is(err, ErrCodeExchange) && !errors.Is(err, errInvalidGrant) {
				status = http.StatusBadGateway
			}
			http.Error(w, "sign-in failed; please start again", status)
			return
		}
		s.log.InfoContext(r.Context(), "signed in", "who", who)
		if s.opts.OnSignIn != nil {
			s.opts.OnSignIn(w, r, who)
			return
		}
		http.Redirect(w, r, who.ReturnTo, http.StatusFound)
	})
}

// errInvalidGrant marks a code exchange refused as invalid_grant (a used or expired code),
// which is the user's to retry, not an outage.
var errInvalidGrant = errors.New("invalid_grant")

// CallbackQuery is the part of the callback's query that the sign-in uses.
type CallbackQuery struct {
	Code, State string
}

// ParseCallbackQuery reads raw, the callback's query string: exactly one code and one state,
// each of bounded length, or the provider's error (ErrDenied with its error code).
func ParseCallbackQuery(raw string) (CallbackQuery, error) {
	if len(raw) > maxQuery {
		return CallbackQuery{}, fmt.Errorf("%w: %d bytes of query", ErrBadCallback, len(raw))
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return CallbackQuery{}, fmt.Errorf("%w: %w", ErrBadCallback, err)
	}
	if e, ok := q["error"]; ok {
		return CallbackQuery{}, fmt.Errorf("%w: %s", ErrDenied, errorCode(strings.Join(e, ",")))
	}
	one := func(name string) (string, error) {
		v := q[name]
		switch {
		case len(v) != 1:
			return "", fmt.Errorf("%w: %d values of %s", ErrBadCallback, len(v), name)
		case v[0] == "" || len(v[0]) > maxParam:
			return "", fmt.Errorf("%w: %s of %d bytes", ErrBadCallback, name, len(v[0]))
		}
		return v[0], nil
	}
	code, err := one("code")
	if err != nil {
		return CallbackQuery{}, err
	}
	state, err := one("state")
	if err != nil {
		return CallbackQuery{}, err
	}
	return CallbackQuery{Code: code, State: state}, nil
}

// errorCode keeps of a provider's error code what is safe to show: the spec's characters, 64
// at most.
func errorCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 64 {
			break
		}
		if r == '_' || r == '-' || r == ',' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (s *SignIn) finish(ctx context.Context, r *http.Request) (*Identity, error) {
	q, err := ParseCallbackQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	c, err := r.Cookie(s.opts.CookieName)
	if err != nil || c.Value == "" {
		return nil, ErrNoCookie
	}
	pd, err := s.open(c.Value)
	if err != nil {
		return nil, err
	}
	now := s.p.now()
	if now.Unix() > pd.Expires {
		return nil, fmt.Errorf("%w: the sign-in took longer than %s", ErrNoCookie, s.opts.Timeout)
	}
	if subtle.ConstantTimeCompare([]byte(q.State), []byte(pd.State)) != 1 {
		return nil, ErrState
	}
	if !s.states.first(pd.State, time.Unix(pd.Expires, 0), now) {
		return nil, fmt.Errorf("%w: this callback was used before", ErrReplayed)
	}
	tok, err := s.cfg.Exchange(s.p.Context(ctx), q.Code, oauth2.VerifierOption(pd.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// The error code only: the body and the request are not for logs.
			if re.ErrorCode == "invalid_grant" {
				return nil, fmt.Errorf("%w: %w (status %d)", ErrCodeExchange, errInvalidGrant, re.Response.StatusCode)
			}
			return nil, fmt.Errorf("%w: %s (status %d)", ErrCodeExchange, errorCode(re.ErrorCode), re.Response.StatusCode)
		}
		if isTimeout(ctx, err) {
			return nil, fmt.Errorf("%w: %w", ErrCodeExchange, timeoutError("token endpoint", s.p.timeout))
		}
		return nil, fmt.Errorf("%w: %s", ErrCodeExchange, redactURLError(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, ErrNoIDToken
	}
	idt, err := s.p.Verify(ctx, raw, pd.Nonce)
	if err != nil {
		return nil, err
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedToken, err)
	}
	if err := s.userinfo(ctx, tok, idt.Subject, claims); err != nil {
		return nil, err
	}
	who := &Identity{Issuer: idt.Issuer, Subject: idt.Subject, Claims: claims, ReturnTo: pd.ReturnTo,
		IDToken: raw, Token: tok}
	if s.opts.Mapper != nil {
		m, err := s.opts.Mapper.Map(ctx, idt.Issuer+" "+idt.Subject, claims)
		if err != nil {
			return nil, err
		}
		who.MatrixID, who.DisplayName = m.UserID, m.DisplayName
	}
	return who, nil
}

// userinfo adds the claims of the userinfo endpoint that the ID token lacks (many providers
// put only sub in it). A provider without the endpoint leaves the claims as they are.
func (s *SignIn) userinfo(ctx context.Context, tok *oauth2.Token, sub string, claims map[string]any) error {
	if s.p.p.UserInfoEndpoint() == "" || tok.AccessToken == "" {
		return nil
	}
	ui, err := s.p.p.UserInfo(s.p.Context(ctx), oauth2.StaticTokenSource(tok))
	if isTimeout(ctx, err) {
		return timeoutError("userinfo", s.p.timeout)
	}
	if err != nil {
		return fmt.Errorf("identity: userinfo: %s", redactURLError(err))
	}
	if ui.Subject != sub {
		return ErrSubjectChange
	}
	var more map[string]any
	if err := ui.Claims(&more); err != nil {
		return fmt.Errorf("identity: userinfo: %w", err)
	}
	for k, v := range more {
		if _, ok := claims[k]; !ok {
			claims[k] = v
		}
	}
	return nil
}

// LogoutURL is the provider's end-session URL for RP-initiated logout, with idTokenHint (the
// Identity's IDToken) and, when not "", where the provider sends the user afterwards (it must
// be registered there). It is "" with ErrNoEndSession when the provider offers no logout.
func (s *SignIn) LogoutURL(idTokenHint, postLogoutRedirect string) (string, error) {
	if s.p.endSession == "" {
		return "", ErrNoEndSession
	}
	u, err := url.Parse(s.p.endSession)
	if err != nil {
		return "", fmt.Errorf("identity: end_session_endpoint: %w", err)
	}
	q := u.Query()
	q.Set("client_id", s.p.clientID)
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	if postLogoutRedirect != "" {
		q.Set("post_logout_redirect_uri", postLogoutRedirect)
		q.Set("state", randomString())
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// ErrNoEndSession is returned by LogoutURL when the provider has no end_session_endpoint.
var ErrNoEndSession = errors.New("identity: the provider offers no RP-initiated logout")

func (s *SignIn) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: s.opts.CookieName, Value: value, Path: s.path, MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode}
}

func (s *SignIn) seal(pd pending) string {
	plain, _ := json.Marshal(pd)
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(s.opts.CookieName)))
}

func (s *SignIn) open(v string) (pending, error) {
	var pd pending
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < s.aead.NonceSize() {
		return pd, ErrBadCookie
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(s.opts.CookieName))
	if err != nil {
		return pd, ErrBadCookie
	}
	if err := json.Unmarshal(plain, &pd); err != nil || pd.State == "" || pd.Nonce == "" || pd.Verifier == "" {
		return pd, ErrBadCookie
	}
	return pd, nil
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// localPath returns p when it is a path on this site, else "/": return_to must not send the
// user elsewhere.
func localPath(p string) string {
	if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	if u, err := url.Parse(p); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return p
}

// redactURLError returns the text of err without URLs' queries, where tokens and codes travel.
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr == nil {
			u.RawQuery = ""
			u.User = nil
			return fmt.Sprintf("%s %s: %v", ue.Op, u.Redacted(), ue.Err)
		}
		return fmt.Sprintf("%s: %v", ue.Op, ue.Err)
	}
	return err.Error()
}
