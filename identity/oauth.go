package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/oauth"

	"github.com/samtalhq/samtal/matrix"
)

// ErrNoOAuth: the homeserver does not offer the OAuth 2.0 API (no auth_metadata). Fall back
// to LegacySSO, matrix.JWT or matrix.Password.
var ErrNoOAuth = errors.New("identity: the homeserver has no OAuth 2.0 API")

// ErrLoginTimeout: the user did not finish signing in within OAuthOptions.Timeout.
var ErrLoginTimeout = errors.New("identity: the sign-in was not finished in time")

// OAuthOptions configure OAuth and OAuthDevice. DB is required.
type OAuthOptions struct {
	DB          *dbutil.Database // the shared database: the tokens are kept there for Transport
	SessionName string           // the matrix.Options.SessionName of the client; "" means "default"
	ClientName  string           // shown to the user at consent; "" means "samtal"
	ClientURI   string           // the client's home page (the spec requires one); "" means samtal's
	Scopes      []string         // more scopes than the spec's API and device scopes (such as openid)
	Timeout     time.Duration    // how long the user has to sign in; 0 means DefaultSignInTimeout
	HTTPTimeout time.Duration    // of each request to the homeserver and its authorization server; 0 means DefaultHTTPTimeout
	Logger      *slog.Logger     // nil means slog.Default()
	// Open shows the authorization URL to the user (OAuth): print it and open a browser. The
	// URL carries no secret.
	Open func(ctx context.Context, url string) error
	// ShowCode shows the user where to go and which code to enter (OAuthDevice).
	ShowCode func(ctx context.Context, code DeviceCode) error
}

// DeviceCode is what a user of a headless tool enters elsewhere, in a browser.
type DeviceCode struct {
	UserCode        string
	VerificationURI string // where to enter it
	CompleteURI     string // the same with the code filled in, when the server offers it
	Expires         time.Time
}

const defaultClientURI = "https://github.com/samtalhq/samtal"

func (o *OAuthOptions) defaults() error {
	if o.DB == nil {
		return errors.New("identity: OAuthOptions.DB is required")
	}
	if o.SessionName == "" {
		o.SessionName = "default"
	}
	if o.ClientName == "" {
		o.ClientName = "samtal"
	}
	if o.ClientURI == "" {
		o.ClientURI = defaultClientURI
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultSignInTimeout
	}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = DefaultHTTPTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// OAuth logs in through the homeserver's OAuth 2.0 API (spec v1.15): it discovers the
// authorization server (auth_metadata), registers this client, and runs the authorization
// code grant with PKCE (S256) and a loopback redirect: a listener on 127.0.0.1 receives the
// code after Open showed the user the URL. The tokens are stored in DB for a Transport.
func OAuth(opts OAuthOptions) matrix.Login {
	return matrix.LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*matrix.Session, error) {
		if err := opts.defaults(); err != nil {
			return nil, err
		}
		if opts.Open == nil {
			return nil, errors.New("identity: OAuthOptions.Open is required")
		}
		meta, err := metadata(ctx, hs, opts.HTTPTimeout)
		if err != nil {
			return nil, err
		}
		lb, err := listenLoopback()
		if err != nil {
			return nil, err
		}
		defer lb.close()
		clientID, err := register(ctx, hs, opts, deviceName, []oauth.GrantType{oauth.GrantTypeAuthorizationCode, oauth.GrantTypeRefreshToken}, []string{lb.redirect})
		if err != nil {
			return nil, err
		}
		device := newDeviceID()
		auth, err := call(ctx, opts.HTTPTimeout, "auth_metadata", func(ctx context.Context) (*oauth.AuthorizationCodeResponse, error) {
			return hs.OAuthGetAuthorizationURL(ctx, oauth.GetAuthorizationURLParams{
				RedirectURI: lb.redirect, Scopes: scopes(opts, device), ClientID: clientID, ResponseMode: oauth.ResponseModeQuery,
			})
		})
		if err != nil {
			return nil, loginErr("authorization URL", err)
		}
		if err := opts.Open(ctx, auth.URL); err != nil {
			return nil, fmt.Errorf("%w: show the authorization URL: %w", matrix.ErrLogin, err)
		}
		wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		code, err := lb.wait(wctx, auth.State)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, err)
		}
		tok, err := call(ctx, opts.HTTPTimeout, "token endpoint", func(ctx context.Context) (*oauth.TokenResponse, error) {
			return hs.OAuthExchangeToken(ctx, oauth.ExchangeTokenParams{
				CodeVerifier: auth.CodeVerifier, RedirectURI: lb.redirect, Code: code, ClientID: clientID,
			})
		})
		if err != nil {
			return nil, loginErr("exchange the code", err)
		}
		return finishOAuth(ctx, hs, opts, meta, clientID, device, tok)
	})
}

// OAuthDevice logs in through the homeserver's OAuth 2.0 API with the device authorization
// grant (RFC 8628), for tools without a browser: ShowCode tells the user where to enter a
// code, and the tool polls until they did.
func OAuthDevice(opts OAuthOptions) matrix.Login {
	return matrix.LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*matrix.Session, error) {
		if err := opts.defaults(); err != nil {
			return nil, err
		}
		if opts.ShowCode == nil {
			return nil, errors.New("identity: OAuthOptions.ShowCode is required")
		}
		meta, err := metadata(ctx, hs, opts.HTTPTimeout)
		if err != nil {
			return nil, err
		}
		if meta.DeviceAuthorizationEndpoint == "" {
			return nil, fmt.Errorf("%w: the authorization server offers no device authorization grant", matrix.ErrLogin)
		}
		clientID, err := register(ctx, hs, opts, deviceName, []oauth.GrantType{oauth.GrantTypeDeviceCode, oauth.GrantTypeRefreshToken}, nil)
		if err != nil {
			return nil, err
		}
		device := newDeviceID()
		dc, err := call(ctx, opts.HTTPTimeout, "device authorization endpoint", func(ctx context.Context) (*oauth.DeviceCodeResponse, error) {
			return hs.OAuthGenerateDeviceCode(ctx, oauth.GenerateDeviceCodeParams{Scopes: scopes(opts, device), ClientID: clientID})
		})
		if err != nil {
			return nil, loginErr("device code", err)
		}
		expires := time.Now().Add(dc.ExpiresIn.Duration)
		if err := opts.ShowCode(ctx, DeviceCode{UserCode: dc.UserCode, VerificationURI: dc.VerificationURI,
			CompleteURI: dc.VerificationURIComplete, Expires: expires}); err != nil {
			return nil, fmt.Errorf("%w: show the device code: %w", matrix.ErrLogin, err)
		}
		interval := max(dc.Interval.Duration, time.Second)
		deadline := time.Now().Add(opts.Timeout)
		if expires.Before(deadline) {
			deadline = expires
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		for {
			tok, err := call(wctx, opts.HTTPTimeout, "token endpoint (device polling)", func(ctx context.Context) (*oauth.TokenResponse, error) {
				return hs.OAuthPollDeviceCode(ctx, oauth.PollDeviceCodeParams{DeviceCode: dc.DeviceCode, ClientID: clientID})
			})
			if err == nil {
				return finishOAuth(ctx, hs, opts, meta, clientID, device, tok)
			}
			switch code := oauthErrCode(err); code {
			case "authorization_pending":
			case "slow_down":
				interval += 5 * time.Second
			default:
				if wctx.Err() != nil {
					return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrLoginTimeout)
				}
				return nil, loginErr("device grant", err)
			}
			select {
			case <-wctx.Done():
				return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrLoginTimeout)
			case <-time.After(interval):
			}
		}
	})
}

// AccountManagementURL is where the user manages their account (devices, sessions, password)
// at the homeserver's authorization server; "" when it names none. The request has
// DefaultHTTPTimeout.
func AccountManagementURL(ctx context.Context, hs *mautrix.Client) (string, error) {
	meta, err := metadata(ctx, hs, DefaultHTTPTimeout)
	if err != nil {
		return "", err
	}
	return meta.AccountManagementURI, nil
}

func metadata(ctx context.Context, hs *mautrix.Client, d time.Duration) (*oauth.ServerMetadata, error) {
	meta, err := call(ctx, d, "auth_metadata", hs.OAuthGetServerMetadata)
	if errors.Is(err, ErrTimeout) {
		return nil, loginErr("", err)
	}
	if err != nil {
		var he mautrix.HTTPError
		if errors.As(err, &he) && he.Response != nil && (he.Response.StatusCode == http.StatusNotFound || he.IsStatus(http.StatusBadRequest)) {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrNoOAuth)
		}
		if errors.Is(err, mautrix.MUnrecognized) {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrNoOAuth)
		}
		return nil, fmt.Errorf("%w: auth_metadata: %s", matrix.ErrLogin, oauthErrText(err))
	}
	if meta.TokenEndpoint == "" || meta.RegistrationEndpoint == "" {
		return nil, fmt.Errorf("%w: auth_metadata lacks the token or registration endpoint", matrix.ErrLogin)
	}
	return meta, nil
}

func register(ctx context.Context, hs *mautrix.Client, opts OAuthOptions, deviceName string, grants []oauth.GrantType, redirects []string) (string, error) {
	resp, err := call(ctx, opts.HTTPTimeout, "registration endpoint", func(ctx context.Context) (*oauth.ClientMetadata, error) {
		return hs.OAuthRegisterClient(ctx, &oauth.ClientMetadata{
			ApplicationType: oauth.ApplicationTypeNative, ClientName: opts.ClientName + " (" + deviceName + ")",
			ClientURI: opts.ClientURI, GrantTypes: grants, RedirectURIs: redirects,
			ResponseTypes: []oauth.ResponseType{oauth.ResponseTypeCode}, TokenEndpointAuthMethod: oauth.AuthMethodNone,
		})
	})
	if err != nil {
		return "", loginErr("register the client", err)
	}
	if resp == nil || resp.ClientID == "" {
		return "", fmt.Errorf("%w: the registration gave no client_id", matrix.ErrLogin)
	}
	return resp.ClientID, nil
}

func scopes(opts OAuthOptions, device id.DeviceID) oauth.ScopeList {
	s := oauth.ScopeList{"urn:matrix:client:api:*", oauth.ScopeDevice(device)}
	for _, x := range opts.Scopes {
		s = append(s, oauth.Scope(x))
	}
	return s
}

// finishOAuth asks who the token belongs to, stores the OAuth session and returns the Matrix
// session.
func finishOAuth(ctx context.Context, hs *mautrix.Client, opts OAuthOptions, meta *oauth.ServerMetadata, clientID string, device id.DeviceID, tok *oauth.TokenResponse) (*matrix.Session, error) {
	if tok == nil || tok.AccessToken == "" {
		return nil, fmt.Errorf("%w: the token response has no access token", matrix.ErrLogin)
	}
	hs.AccessToken = tok.AccessToken
	who, err := call(ctx, opts.HTTPTimeout, "whoami", hs.Whoami)
	hs.AccessToken = ""
	if err != nil {
		return nil, loginErr("whoami with the new token", err)
	}
	if who.DeviceID != "" {
		device = who.DeviceID
	}
	var expires time.Time
	if tok.ExpiresIn.Duration > 0 {
		expires = time.Now().Add(tok.ExpiresIn.Duration)
	}
	store, err := openTokenStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	if err := store.save(ctx, opts.SessionName, &oauthRecord{ClientID: clientID, TokenEndpoint: meta.TokenEndpoint,
		Revocation: meta.RevocationEndpoint, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: expires}); err != nil {
		return nil, err
	}
	opts.Logger.InfoContext(ctx, "logged in through OAuth 2.0", "user", who.UserID, "device", device, "client_id", clientID)
	return &matrix.Session{HomeserverURL: hs.HomeserverURL.String(), UserID: who.UserID, DeviceID: device,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: expires}, nil
}

// loginErr is a failed login step: a timeout as it is (ErrTimeout names the step), any other
// error described without what a body could hold.
func loginErr(step string, err error) error {
	if errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %w", matrix.ErrLogin, err)
	}
	return fmt.Errorf("%w: %s: %s", matrix.ErrLogin, step, oauthErrText(err))
}

// oauthErrCode is the OAuth error code in an error from mautrix's OAuth calls.
func oauthErrCode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		if c, ok := he.RespError.ExtraData["error"].(string); ok {
			return c
		}
		return he.RespError.ErrCode
	}
	return ""
}

// oauthErrText describes an error of mautrix's OAuth calls without what a body could hold.
func oauthErrText(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) {
		status := 0
		if he.Response != nil {
			status = he.Response.StatusCode
		}
		if code := oauthErrCode(err); code != "" {
			return fmt.Sprintf("status %d %s", status, errorCode(code))
		}
		if he.WrappedError != nil {
			return redactURLError(he.WrappedError)
		}
		return fmt.Sprintf("status %d", status)
	}
	return redactURLError(err)
}

func newDeviceID() id.DeviceID {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return id.DeviceID(b)
}

// loopback is the redirect target of a native client: a listener on 127.0.0.1 (RFC 8252).
type loopback struct {
	ln       net.Listener
	srv      *http.Server
	redirect string
	got      chan url.Values
}

func listenLoopback() (*loopback, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("identity: loopback listener: %w", err)
	}
	lb := &loopback{ln: ln, redirect: "http://" + ln.Addr().String() + "/callback", got: make(chan url.Values, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/callback", func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil || len(r.URL.RawQuery) > maxQuery {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		select {
		case lb.got <- q:
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		msg := "Signed in. You can close this window."
		if e := q.Get("error"); e != "" {
			msg = "Sign-in failed: " + errorCode(e)
		}
		fmt.Fprintf(w, "<!doctype html><title>samtal</title><p>%s</p>", html.EscapeString(msg))
	})
	lb.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go lb.srv.Serve(ln) //nolint:errcheck // ends with close
	return lb, nil
}

// wait returns the code of the first callback, which must carry state.
func (lb *loopback) wait(ctx context.Context, state string) (string, error) {
	q, err := lb.next(ctx)
	if err != nil {
		return "", err
	}
	switch {
	case q.Get("error") != "":
		return "", fmt.Errorf("%w: %s", ErrDenied, errorCode(q.Get("error")))
	case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
		return "", ErrState
	case q.Get("code") == "":
		return "", fmt.Errorf("%w: no code", ErrBadCallback)
	}
	return q.Get("code"), nil
}

// next returns the query of the first callback.
func (lb *loopback) next(ctx context.Context) (url.Values, error) {
	select {
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, ErrLoginTimeout
		}
		return nil, ctx.Err()
	case q := <-lb.got:
		return q, nil
	}
}

func (lb *loopback) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = lb.srv.Shutdown(ctx)
}
