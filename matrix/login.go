package matrix

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Login obtains a new session from a homeserver. New calls it only when the database holds no
// session for Options.SessionName, or when the stored one was revoked.
//
// The logins here cover password, m.login.token (after SSO), JWT, appservice and a ready access
// token; the identity package implements Login for OAuth 2.0.
type Login interface {
	// Login logs in through hs, a client for the homeserver with no credentials yet.
	Login(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error)
}

// LoginFunc adapts a function to Login.
type LoginFunc func(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error)

// Login calls f.
func (f LoginFunc) Login(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error) {
	return f(ctx, hs, deviceName)
}

// ErrLogin wraps every failure to log in.
var ErrLogin = errors.New("matrix: login failed")

// Password logs in with a user's password. user is a localpart or a full user ID.
func Password(user, password string) Login {
	return namedLogin{login: loginRequest(mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:   password,
	}), user: user}
}

// LoginToken logs in with a short-lived m.login.token, as issued after single sign-on.
func LoginToken(token string) Login {
	return loginRequest(mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: token})
}

// JWT logs in with a JSON Web Token (org.matrix.login.jwt), for homeservers configured to trust
// the agency's token issuer.
func JWT(token string) Login {
	return loginRequest(mautrix.ReqLogin{Type: mautrix.AuthTypeSynapseJWT, Token: token})
}

// AppService logs in as a user in an appservice's namespace with m.login.application_service,
// authenticated by the appservice's as_token.
func AppService(asToken, user string) Login {
	req := mautrix.ReqLogin{
		Type:       mautrix.AuthTypeAppservice,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
	}
	return namedLogin{login: LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error) {
		hs.AccessToken = asToken
		defer func() { hs.AccessToken = "" }()
		return loginRequest(req).Login(ctx, hs, deviceName)
	}), user: user}
}

// AccessToken uses a token that was issued elsewhere. The user and device are asked from the
// homeserver (whoami), which also checks the token.
func AccessToken(token string) Login {
	return LoginFunc(func(ctx context.Context, hs *mautrix.Client, _ string) (*Session, error) {
		hs.AccessToken = token
		resp, err := hs.Whoami(ctx)
		hs.AccessToken = ""
		if err != nil {
			return nil, fmt.Errorf("%w: check access token: %w", ErrLogin, wrapErr(err))
		}
		return &Session{HomeserverURL: hs.HomeserverURL.String(), UserID: resp.UserID, DeviceID: resp.DeviceID, AccessToken: token}, nil
	})
}

func loginRequest(req mautrix.ReqLogin) Login {
	return LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*Session, error) {
		req.InitialDeviceDisplayName = deviceName
		resp, err := hs.Login(ctx, &req)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrLogin, req.Type, wrapErr(err))
		}
		return sessionFromLogin(hs, resp), nil
	})
}

func sessionFromLogin(hs *mautrix.Client, resp *mautrix.RespLogin) *Session {
	s := &Session{
		HomeserverURL: hs.HomeserverURL.String(),
		UserID:        resp.UserID,
		DeviceID:      resp.DeviceID,
		AccessToken:   resp.AccessToken,
		RefreshToken:  resp.RefreshToken,
	}
	if resp.WellKnown != nil && resp.WellKnown.Homeserver.BaseURL != "" {
		s.HomeserverURL = resp.WellKnown.Homeserver.BaseURL
	}
	if resp.ExpiresInMS > 0 {
		s.ExpiresAt = time.Now().Add(time.Duration(resp.ExpiresInMS) * time.Millisecond)
	}
	return s
}

// validUserID checks a user ID from configuration before it is used for discovery.
func validUserID(u id.UserID) error {
	if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
		return fmt.Errorf("matrix: invalid user ID %q: %w", u, err)
	}
	return nil
}
