package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/matrix"
)

// account is how a command finds its Matrix account: the database that holds the session, the
// session's name in it, and the homeserver for the first login. The credentials for that login
// come from the environment only (see credentials).
type account struct {
	homeserver string
	db         string
	session    string
	pickleKey  string // file with the e2ee pickle key; "" means beside a SQLite database
	noE2EE     bool

	m *e2ee.Machine // set by open when encryption is on

	// identity (OAuth 2.0 login, login_oauth.go): told the database once it is open
	onDB func(*dbutil.Database)
}

// accountFlags registers --homeserver, --db and --session on fs, with their defaults from the
// environment.
func accountFlags(fs *flag.FlagSet) *account {
	a := &account{}
	fs.StringVar(&a.homeserver, "homeserver", os.Getenv("SAMTAL_HOMESERVER"),
		"homeserver URL for the first login (env SAMTAL_HOMESERVER); not needed with a stored session")
	a.db = envOr("SAMTAL_DB", defaultDB())
	fs.Func("db", "database with the stored session: a SQLite file or a postgres:// URL (env SAMTAL_DB; default "+storage.Redact(a.db)+")",
		func(v string) error { a.db = v; return nil })
	fs.StringVar(&a.session, "session", "default", "name of the stored session, for several accounts in one database")
	fs.StringVar(&a.pickleKey, "pickle-key", os.Getenv("SAMTAL_PICKLE_KEY_FILE"),
		"file with the key that encrypts the device's crypto keys (env SAMTAL_PICKLE_KEY_FILE; default: the database's path + .pickle-key, created 0600)")
	fs.BoolVar(&a.noE2EE, "no-e2ee", os.Getenv("SAMTAL_E2EE") == "off",
		"do not enable end-to-end encryption (env SAMTAL_E2EE=off); encrypted rooms are then refused")
	return a
}

// pickleKeyFile is where the e2ee pickle key is kept: --pickle-key, else beside a SQLite
// database. A PostgreSQL database has no place beside it: "" means no encryption.
func (a *account) pickleKeyFile() string {
	if a.pickleKey != "" || storage.IsPostgres(a.db) {
		return a.pickleKey
	}
	return strings.TrimPrefix(a.db, "file:") + ".pickle-key"
}

// enableE2EE turns on encryption for c unless it was switched off.
func (a *account) enableE2EE(ctx context.Context, e *env, c *matrix.Client) error {
	path := a.pickleKeyFile()
	if a.noE2EE || path == "" {
		if path == "" && !a.noE2EE {
			e.log.Warn("end-to-end encryption is off: name a pickle key file with --pickle-key or SAMTAL_PICKLE_KEY_FILE")
		}
		return nil
	}
	key, err := e2ee.LoadOrCreatePickleKey(path)
	if err != nil {
		return err
	}
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: key})
	if err != nil {
		return fmt.Errorf("%w (or run with --no-e2ee)", err)
	}
	a.m = m
	return nil
}

// credentialsHelp is the part of each command's help that says how to log in.
const credentialsHelp = `The first use logs in with SAMTAL_USER and SAMTAL_PASSWORD, or SAMTAL_ACCESS_TOKEN, from
the environment, and stores the session in the database; later uses need only --db and
--session. There is no password flag, because flags show in 'ps'.`

// defaultDB is $XDG_DATA_HOME/samtal/samtal.db, else ~/.local/share/samtal/samtal.db, else
// samtal.db in the working directory.
func defaultDB() string {
	if dir := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "samtal", "samtal.db")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "samtal", "samtal.db")
	}
	return "samtal.db"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// credentials returns the login the environment offers, and nil when it offers none or only
// part of one (the error says what is missing). user is SAMTAL_USER when it is a full user ID,
// which lets the homeserver be discovered from it.
func credentials() (login matrix.Login, user id.UserID, err error) {
	name, password, token := os.Getenv("SAMTAL_USER"), os.Getenv("SAMTAL_PASSWORD"), os.Getenv("SAMTAL_ACCESS_TOKEN")
	if strings.HasPrefix(name, "@") {
		user = id.UserID(name)
		if err := matrix.ValidateUserID(user); err != nil {
			return nil, "", fmt.Errorf("SAMTAL_USER: %w", err)
		}
	}
	switch {
	case token != "":
		return matrix.AccessToken(token), user, nil
	case name != "" && password != "":
		return matrix.Password(name, password), user, nil
	case name != "":
		return nil, "", fmt.Errorf("%w: SAMTAL_USER is set but SAMTAL_PASSWORD is not", errAuth)
	case password != "":
		return nil, "", fmt.Errorf("%w: SAMTAL_PASSWORD is set but SAMTAL_USER is not", errAuth)
	}
	return nil, "", nil
}

// open returns a client for the stored session, logging in with the environment's credentials
// when there is none (or it was revoked). Close it with the returned function. Credentials
// that are incomplete, as when SAMTAL_PASSWORD was unset after the first login, matter only
// when a login is needed.
func (a *account) open(ctx context.Context, e *env) (*matrix.Client, func(), error) {
	login, user, credErr := credentials()
	c, done, err := a.openWith(ctx, e, login, user)
	if credErr != nil && (errors.Is(err, errAuth) || errors.Is(err, matrix.ErrUnknownToken)) {
		return nil, nil, credErr
	}
	return c, done, err
}

// openWith is open with the login to use when no session is stored; nil uses only a stored one.
func (a *account) openWith(ctx context.Context, e *env, login matrix.Login, user id.UserID) (*matrix.Client, func(), error) {
	if err := checkHomeserverURL(a.homeserver); err != nil {
		return nil, nil, err
	}
	db, created, err := a.openDB(ctx)
	if err != nil {
		return nil, nil, err
	}
	opts := matrix.Options{
		HomeserverURL: a.homeserver,
		UserID:        user,
		Login:         login,
		DB:            db,
		SessionName:   a.session,
		DeviceName:    deviceName(),
		Logger:        e.log,
	}
	if opts.HTTPClient, err = a.httpClient(ctx, e, db); err != nil { // OAuth 2.0 refresh (login_oauth.go)
		db.Close()
		return nil, nil, err
	}
	if login != nil && opts.HomeserverURL == "" && opts.UserID == "" {
		// The credentials can only be used with a homeserver; a stored session knows its own.
		opts.Login = nil
	}
	c, err := matrix.New(ctx, opts)
	if err == nil {
		if err = a.enableE2EE(ctx, e, c); err != nil {
			c.Close()
			db.Close()
			return nil, nil, err
		}
		return c, func() {
			if a.m != nil {
				a.m.Close()
			}
			c.Close()
			db.Close()
		}, nil
	}
	switch {
	case opts.Login == nil && login != nil && (errors.Is(err, matrix.ErrLogin) || errors.Is(err, matrix.ErrUnknownToken)):
		err = fmt.Errorf("%w: to log in, name the homeserver with --homeserver or SAMTAL_HOMESERVER, or set SAMTAL_USER to a full user ID (@user:server)", errUsage)
	case login == nil && errors.Is(err, matrix.ErrLogin):
		err = fmt.Errorf("%w: no session %q in %s; set SAMTAL_USER and SAMTAL_PASSWORD (or SAMTAL_ACCESS_TOKEN) and SAMTAL_HOMESERVER to log in", errAuth, a.session, storage.Redact(a.db))
	case login == nil && errors.Is(err, matrix.ErrUnknownToken):
		err = fmt.Errorf("the session %q was revoked; set SAMTAL_USER and SAMTAL_PASSWORD to log in again: %w", a.session, err)
	}
	db.Close()
	if created != nil {
		created() // a first command that could not log in leaves nothing behind
	}
	return nil, nil, err
}

// checkHomeserverURL checks that a --homeserver is an http(s) URL with a host, so that a
// missing scheme is a usage error rather than a URL parser's.
func checkHomeserverURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: homeserver %q is not a URL such as https://matrix.agency.example", errUsage, s)
	}
	return nil
}

// openDB opens the database. A new SQLite file is created readable by its owner only, since it
// holds access tokens; SQLite gives its journal files the same mode. When the file (and its
// directory) was created here, remove deletes them again, to call when the database was closed
// without a session stored in it.
func (a *account) openDB(ctx context.Context) (db *dbutil.Database, remove func(), err error) {
	if a.db == "" {
		return nil, nil, fmt.Errorf("%w: no database: set --db or SAMTAL_DB", errUsage)
	}
	if !storage.IsPostgres(a.db) && !strings.HasPrefix(a.db, "file:") {
		dir := filepath.Dir(a.db)
		newDir := ""
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			newDir = topmostMissing(dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("create the database's directory: %w", err)
		}
		f, err := os.OpenFile(a.db, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
			path := a.db
			remove = func() {
				for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
					_ = os.Remove(path + suffix)
				}
				if newDir != "" {
					_ = os.RemoveAll(newDir)
				}
			}
		} else if !errors.Is(err, os.ErrExist) {
			return nil, nil, fmt.Errorf("create the database: %w", err)
		}
	}
	db, err = matrix.OpenDatabase(ctx, a.db)
	if err != nil && remove != nil {
		remove()
	}
	return db, remove, err
}

// topmostMissing returns the outermost directory of dir's path that does not exist yet.
func topmostMissing(dir string) string {
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		if _, err := os.Stat(parent); err == nil {
			return dir
		}
		dir = parent
	}
}

// deviceName is how the session is listed among the account's devices, so that its owner can
// tell which machine it is on.
func deviceName() string {
	if host, err := os.Hostname(); err == nil && host != "" {
		return "samtal CLI on " + host
	}
	return "samtal CLI"
}
