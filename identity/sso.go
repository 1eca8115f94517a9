package identity

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"time"

	"maunium.net/go/mautrix"

	"github.com/samtalhq/samtal/matrix"
)

// ErrNoSSO: the homeserver offers no m.login.sso.
var ErrNoSSO = errors.New("identity: the homeserver offers no single sign-on (m.login.sso)")

// SSOOptions configure LegacySSO.
type SSOOptions struct {
	// Open shows the sign-on URL to the user: print it and open a browser (required).
	Open    func(ctx context.Context, url string) error
	Timeout time.Duration // how long the user has to sign in; 0 means DefaultSignInTimeout
	IDP     string        // the identity provider's ID among the server's, "" for the server's choice
	// HTTPTimeout bounds each request to the homeserver; 0 means DefaultHTTPTimeout.
	HTTPTimeout time.Duration
}

// LegacySSO logs in with the homeserver's own single sign-on, for servers without the OAuth
// 2.0 API: the user signs in through m.login.sso in a browser, the homeserver sends a
// m.login.token to a loopback listener on 127.0.0.1, and the token is exchanged for a session
// (matrix.LoginToken). A random value in the redirect URL ties the token to this login.
func LegacySSO(opts SSOOptions) matrix.Login {
	return matrix.LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*matrix.Session, error) {
		if opts.Open == nil {
			return nil, errors.New("identity: SSOOptions.Open is required")
		}
		if opts.Timeout == 0 {
			opts.Timeout = DefaultSignInTimeout
		}
		if opts.HTTPTimeout <= 0 {
			opts.HTTPTimeout = DefaultHTTPTimeout
		}
		flows, err := call(ctx, opts.HTTPTimeout, "login flows", hs.GetLoginFlows)
		if err != nil {
			return nil, loginErr("login flows", err)
		}
		if !flows.HasFlow(mautrix.AuthTypeSSO) || !flows.HasFlow(mautrix.AuthTypeToken) {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrNoSSO)
		}
		lb, err := listenLoopback()
		if err != nil {
			return nil, err
		}
		defer lb.close()
		tie := randomString()
		redirect := lb.redirect + "?" + url.Values{"samtal": {tie}}.Encode()
		path := []any{"login", "sso", "redirect"}
		if opts.IDP != "" {
			path = append(path, opts.IDP)
		}
		u := hs.BuildURLWithQuery(mautrix.ClientURLPath(append([]any{"v3"}, path...)), map[string]string{"redirectUrl": redirect})
		if err := opts.Open(ctx, u); err != nil {
			return nil, fmt.Errorf("%w: show the sign-on URL: %w", matrix.ErrLogin, err)
		}
		wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		q, err := lb.next(wctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, err)
		}
		if subtle.ConstantTimeCompare([]byte(q.Get("samtal")), []byte(tie)) != 1 {
			return nil, fmt.Errorf("%w: %w", matrix.ErrLogin, ErrState)
		}
		token := q.Get("loginToken")
		if token == "" || len(token) > maxParam {
			return nil, fmt.Errorf("%w: %w: no loginToken", matrix.ErrLogin, ErrBadCallback)
		}
		return call(ctx, opts.HTTPTimeout, "m.login.token", func(ctx context.Context) (*matrix.Session, error) {
			return matrix.LoginToken(token).Login(ctx, hs, deviceName)
		})
	})
}
