package matrix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Options configure a Client. DB is required, and so is one of HomeserverURL or UserID (for
// discovery); Login is required the first time, when the database holds no session yet.
type Options struct {
	HomeserverURL string           // base URL of the client API; "" discovers it from UserID's server
	UserID        id.UserID        // the account, for .well-known discovery; optional with HomeserverURL
	Login         Login            // how to log in when no session is stored (or the stored one was revoked)
	DB            *dbutil.Database // the shared database (OpenDatabase); holds the session, outbox and sync token
	SessionName   string           // key of this account's session in DB; "" means "default"
	DeviceName    string           // display name of a new device; "" means "samtal"
	Logger        *slog.Logger     // nil means slog.Default()
	HTTPClient    *http.Client     // nil means a client with a 2-minute request timeout
	Outbox        OutboxOptions    // how sends are queued and retried
}

// Client is a Matrix account on one device, with a durable outbox and a restart-safe syncer.
// It is safe for concurrent use. Close it to stop its workers.
type Client struct {
	mx      *mautrix.Client
	send    *mautrix.Client // the outbox's own client: no automatic retries, the outbox decides
	db      *dbutil.Database
	log     *slog.Logger
	name    string
	session Session

	outbox *outbox

	encMu    sync.Mutex
	enc      Encryption
	encRooms encryptionCache
	mediaState
	syncing syncState // whether a Syncer runs and is current (sync.go)

	closeOnce sync.Once
}

// ErrNoDatabase is returned by New when Options.DB is nil.
var ErrNoDatabase = errors.New("matrix: Options.DB is required (see OpenDatabase)")

// New returns a client for the account in opts: the session stored under opts.SessionName if
// there is one and the homeserver still accepts it, else a new login with opts.Login, which is
// then stored. Pending sends from a previous run resume.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.DB == nil {
		return nil, ErrNoDatabase
	}
	if opts.SessionName == "" {
		opts.SessionName = "default"
	}
	if opts.DeviceName == "" {
		opts.DeviceName = "samtal"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 2 * time.Minute}
	}
	db, err := upgradeDB(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	c := &Client{db: db, name: opts.SessionName, log: opts.Logger.With("session", opts.SessionName)}
	sessions := sessionStore{db}

	sess, err := sessions.load(ctx, opts.SessionName)
	if err != nil {
		return nil, err
	}
	if sess != nil {
		if err := c.useSession(ctx, opts, sess); err == nil {
			return c.start(ctx, opts)
		} else if !errors.Is(err, ErrUnknownToken) || opts.Login == nil {
			return nil, err
		}
		c.log.Warn("stored session was revoked; logging in again", "user", sess.UserID, "device", sess.DeviceID)
		if opts.HomeserverURL == "" {
			opts.HomeserverURL = sess.HomeserverURL // the same server, a new device
		}
	}
	if opts.Login == nil {
		return nil, fmt.Errorf("%w: no stored session %q and Options.Login is nil", ErrLogin, opts.SessionName)
	}
	base, err := homeserverURL(ctx, opts)
	if err != nil {
		return nil, err
	}
	anon, err := c.newMautrix(opts, base, "", "")
	if err != nil {
		return nil, err
	}
	sess, err = opts.Login.Login(ctx, anon, opts.DeviceName)
	if err != nil {
		return nil, err
	}
	if sess.HomeserverURL == "" {
		sess.HomeserverURL = base
	}
	if err := sessions.save(ctx, opts.SessionName, sess); err != nil {
		return nil, err
	}
	if err := c.useSession(ctx, opts, sess); err != nil {
		return nil, err
	}
	c.log.Info("logged in", "user", sess.UserID, "device", sess.DeviceID)
	return c.start(ctx, opts)
}

// useSession builds the mautrix clients for sess and checks with the homeserver that its token
// is still good.
func (c *Client) useSession(ctx context.Context, opts Options, sess *Session) error {
	mx, err := c.newMautrix(opts, sess.HomeserverURL, sess.UserID, sess.AccessToken)
	if err != nil {
		return err
	}
	mx.DeviceID = sess.DeviceID
	// Room operations (create, invite, join) are rate limited by homeservers: let mautrix wait
	// and retry them. Sends go through the outbox, which has its own policy.
	mx.DefaultHTTPRetries = 4
	send, err := c.newMautrix(opts, sess.HomeserverURL, sess.UserID, sess.AccessToken)
	if err != nil {
		return err
	}
	send.DeviceID = sess.DeviceID
	send.IgnoreRateLimit = true
	// Asked without mautrix's retries: a homeserver that is down is reported at once, not
	// after a minute of backoff.
	resp, err := send.Whoami(ctx)
	if err != nil {
		return fmt.Errorf("matrix: check session of %s: %w", sess.UserID, wrapErr(err))
	}
	if resp.UserID != sess.UserID {
		return fmt.Errorf("matrix: stored session is for %s but the homeserver says %s", sess.UserID, resp.UserID)
	}
	c.mx, c.send, c.session = mx, send, *sess
	return nil
}

func (c *Client) newMautrix(opts Options, base string, user id.UserID, token string) (*mautrix.Client, error) {
	mx, err := mautrix.NewClient(base, user, token)
	if err != nil {
		return nil, fmt.Errorf("matrix: homeserver URL %q: %w", base, err)
	}
	mx.Client = opts.HTTPClient
	mx.Log = zerologToSlog(c.log)
	mx.UserAgent = "samtal " + mx.UserAgent
	return mx, nil
}

func (c *Client) start(ctx context.Context, opts Options) (*Client, error) {
	ob, err := newOutbox(ctx, c, opts.Outbox)
	if err != nil {
		return nil, err
	}
	c.outbox = ob
	return c, nil
}

// homeserverURL is opts.HomeserverURL, or the one the user's server names in
// .well-known/matrix/client.
func homeserverURL(ctx context.Context, opts Options) (string, error) {
	if opts.HomeserverURL != "" {
		return strings.TrimRight(opts.HomeserverURL, "/"), nil
	}
	if opts.UserID == "" {
		return "", errors.New("matrix: Options needs HomeserverURL or UserID")
	}
	if err := validUserID(opts.UserID); err != nil {
		return "", err
	}
	wk, err := mautrix.DiscoverClientAPIWithClient(ctx, opts.HTTPClient, opts.UserID.Homeserver())
	if err != nil {
		return "", fmt.Errorf("matrix: discover homeserver of %s: %w", opts.UserID, err)
	}
	if wk == nil || wk.Homeserver.BaseURL == "" {
		// No .well-known: the server name is the homeserver, per the spec.
		return "https://" + opts.UserID.Homeserver(), nil
	}
	return strings.TrimRight(wk.Homeserver.BaseURL, "/"), nil
}

// Mautrix returns the underlying mautrix client, for what this package does not wrap. It
// retries rate-limited requests itself; do not use it to send messages that must not be lost
// (use Send).
func (c *Client) Mautrix() *mautrix.Client { return c.mx }

// UserID is the account's user ID.
func (c *Client) UserID() id.UserID { return c.session.UserID }

// DeviceID is this client's device.
func (c *Client) DeviceID() id.DeviceID { return c.session.DeviceID }

// Session returns the stored session (including its tokens: handle with care).
func (c *Client) Session() Session { return c.session }

// Database is the database the client keeps its session, outbox and sync position in; the
// e2ee package keeps the crypto store in it too.
func (c *Client) Database() *dbutil.Database { return c.db }

// SessionName is the key of this client's session in the database.
func (c *Client) SessionName() string { return c.name }

// Logger is the client's logger.
func (c *Client) Logger() *slog.Logger { return c.log }

// Close stops the outbox workers and waits for them; sends still pending stay in the database
// and resume with the next New. It does not close the database.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.outbox != nil {
			c.outbox.close()
		}
	})
	return nil
}

// Logout ends the session at the homeserver and forgets it. Pending sends are kept in the
// database but no session can send them until another login.
func (c *Client) Logout(ctx context.Context) error {
	c.Close()
	if _, err := c.mx.Logout(ctx); err != nil && !errors.Is(wrapErr(err), ErrUnknownToken) {
		return fmt.Errorf("matrix: logout: %w", wrapErr(err))
	}
	return sessionStore{c.db}.delete(ctx, c.name)
}
