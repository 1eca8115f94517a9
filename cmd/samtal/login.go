package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/matrix"
)

// runLogin logs in with the environment's credentials and stores the session. A session that
// is stored already and still valid is kept: logging in again would make a new device.
func runLogin(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "login")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	useOAuth := fs.Bool("oauth", false, "log in through the homeserver's OAuth 2.0 API in a browser (prints and opens the URL, listens on 127.0.0.1)")
	useDevice := fs.Bool("device", false, "log in through the homeserver's OAuth 2.0 API with a code entered in a browser elsewhere")
	var scopes []string
	fs.Func("scope", "with --oauth or --device: one more `SCOPE` to ask for, such as openid or offline_access where the authorization server wants them (repeatable)",
		func(v string) error { scopes = append(scopes, v); return nil })
	setUsage(fs, "login [flags]", `Logs in with SAMTAL_USER and SAMTAL_PASSWORD (or SAMTAL_ACCESS_TOKEN) from the environment
and stores the session in the database, where later commands find it. There is no password
flag, because flags show in 'ps'. A stored session that still works is kept; run 'samtal
logout' first to change accounts.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *useOAuth || *useDevice {
		return runLoginOAuth(ctx, e, acct, *useDevice, scopes, *asJSON)
	}
	login, user, err := credentials()
	if err != nil {
		return err
	}
	if login == nil {
		return fmt.Errorf("%w: set SAMTAL_USER and SAMTAL_PASSWORD (or SAMTAL_ACCESS_TOKEN) in the environment", errAuth)
	}

	// A stored session first: without a login, New uses it or says there is none.
	c, done, err := acct.openWith(ctx, e, nil, "")
	existing := err == nil
	if errors.Is(err, errAuth) || errors.Is(err, matrix.ErrUnknownToken) {
		c, done, err = acct.openWith(ctx, e, login, user)
	}
	if err != nil {
		return err
	}
	defer done()
	if name := strings.TrimSpace(os.Getenv("SAMTAL_USER")); existing && name != "" && !sameUser(c.UserID(), name) {
		return fmt.Errorf("session %q in %s is %s, not %s: run 'samtal logout' first, or choose another --session",
			acct.session, storage.Redact(acct.db), c.UserID(), name)
	}
	return printLogin(e.stdout, *asJSON, loginResult{
		UserID: c.UserID(), DeviceID: c.DeviceID(), Homeserver: c.Session().HomeserverURL,
		Session: acct.session, New: !existing,
	})
}

type loginResult struct {
	UserID     id.UserID   `json:"user_id"`
	DeviceID   id.DeviceID `json:"device_id"`
	Homeserver string      `json:"homeserver"`
	Session    string      `json:"session"`
	New        bool        `json:"new"` // false when a stored session was kept
}

func printLogin(w io.Writer, asJSON bool, r loginResult) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	verb := "Logged in"
	if !r.New {
		verb = "Already logged in"
	}
	_, err := fmt.Fprintf(w, "%s as %s on device %s (session %q).\n", verb, r.UserID, r.DeviceID, r.Session)
	return err
}

// sameUser reports whether name, a localpart or a user ID as in SAMTAL_USER, is user.
func sameUser(user id.UserID, name string) bool {
	if strings.HasPrefix(name, "@") {
		return id.UserID(name) == user
	}
	return strings.EqualFold(user.Localpart(), name)
}

// runLogout ends the stored session at the homeserver and deletes it from the database.
func runLogout(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "logout")
	acct := accountFlags(fs)
	setUsage(fs, "logout [flags]", "Ends the stored session at the homeserver and deletes it from the database.")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	c, done, err := acct.openWith(ctx, e, nil, "")
	if err != nil {
		return err
	}
	defer done()
	user := c.UserID()
	if err := acct.revokeOAuth(ctx, e, c.Database()); err != nil {
		return err
	}
	if err := c.Logout(ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "Logged out %s (session %q).\n", user, acct.session)
	return err
}
