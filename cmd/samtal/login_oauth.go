package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// runLoginOAuth is 'samtal login --oauth' (authorization code with a loopback redirect: the
// URL is printed and opened in a browser) and 'samtal login --device' (a code to enter in a
// browser elsewhere), through the homeserver's OAuth 2.0 API.
func runLoginOAuth(ctx context.Context, e *env, acct *account, device bool, scopes []string, asJSON bool) error {
	if acct.homeserver == "" {
		return fmt.Errorf("%w: name the homeserver with --homeserver or SAMTAL_HOMESERVER", errUsage)
	}
	oauthLogin := func(db *dbutil.Database) matrix.Login {
		opts := identity.OAuthOptions{DB: db, SessionName: acct.session, Logger: e.log, Scopes: scopes,
			Open: func(ctx context.Context, u string) error {
				fmt.Fprintf(e.stderr, "Open this address in a browser to log in:\n\n  %s\n\n", u)
				openBrowser(u)
				return nil
			},
			ShowCode: func(ctx context.Context, c identity.DeviceCode) error {
				where := c.VerificationURI
				if c.CompleteURI != "" {
					where = c.CompleteURI
				}
				fmt.Fprintf(e.stderr, "To log in, open %s in a browser and enter the code %s\n", where, c.UserCode)
				return nil
			},
		}
		if device {
			return identity.OAuthDevice(opts)
		}
		return identity.OAuth(opts)
	}
	c, done, err := acct.openWithLogin(ctx, e, oauthLogin)
	if errors.Is(err, identity.ErrNoOAuth) {
		return fmt.Errorf("%w: %s has no OAuth 2.0 API; log in with SAMTAL_USER and SAMTAL_PASSWORD instead", errAuth, acct.homeserver)
	}
	if err != nil {
		return err
	}
	defer done()
	return printLogin(e.stdout, asJSON, loginResult{
		UserID: c.UserID(), DeviceID: c.DeviceID(), Homeserver: c.Session().HomeserverURL,
		Session: acct.session, New: true,
	})
}

// openWithLogin is openWith for a login that needs the opened database.
func (a *account) openWithLogin(ctx context.Context, e *env, login func(*dbutil.Database) matrix.Login) (*matrix.Client, func(), error) {
	var db *dbutil.Database
	deferred := matrix.LoginFunc(func(ctx context.Context, hs *mautrix.Client, deviceName string) (*matrix.Session, error) {
		return login(db).Login(ctx, hs, deviceName)
	})
	a.onDB = func(d *dbutil.Database) { db = d }
	return a.openWith(ctx, e, deferred, "")
}

// httpClient is the HTTP client of the account's Matrix client: one that keeps the tokens of
// an OAuth 2.0 session fresh (a session of another kind passes through it untouched).
func (a *account) httpClient(ctx context.Context, e *env, db *dbutil.Database) (*http.Client, error) {
	if a.onDB != nil {
		a.onDB(db)
	}
	tr, err := identity.NewTransport(ctx, db, a.session, identity.TransportOptions{Logger: e.log})
	if err != nil {
		return nil, err
	}
	return tr.Client(), nil
}

// revokeOAuth ends an OAuth 2.0 session's grant at the authorization server, on logout.
func (a *account) revokeOAuth(ctx context.Context, e *env, db *dbutil.Database) error {
	tr, err := identity.NewTransport(ctx, db, a.session, identity.TransportOptions{Logger: e.log})
	if err != nil {
		return err
	}
	return tr.Revoke(ctx)
}

// openBrowser tries to open u in the user's browser; the printed URL is the fallback.
func openBrowser(u string) {
	if os.Getenv("SAMTAL_NO_BROWSER") != "" {
		return
	}
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if cmd.Start() == nil {
		go cmd.Wait() //nolint:errcheck // best effort
	}
}
