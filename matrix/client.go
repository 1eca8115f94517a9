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

	"github.com/samtalhq/samtal/internal/backoff"
	"github.com/samtalhq/samtal/internal/storage"
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
	// OnError is called when the client finds its session unusable while it runs: the
	// homeserver refused the stored token (ErrUnknownToken). Sends stay pending until a new
	// login of the same user (New with Login) sends them. Client.Err returns the same error.
	OnError func(error)

	// Federation (issue 13):

	// CaseRoomACL, when set, gives the server ACL of every CaseRoom created without
	// RoomSpec.ServerACL, such as the agencies' federation list (federation.Watcher). When it
	// fails, so does the creation.
	CaseRoomACL ServerACLSource
}

// Client is a Matrix account on one device, with a durable outbox and a restart-safe syncer.
// It is safe for concurrent use. Close it to stop its workers.
type Client struct {
	mx      *mautrix.Client
	send    *mautrix.Client // the outbox's own client: no automatic retries, the outbox decides
	db      *dbutil.Database
	q       *storage.Statements // db's hot queries (outbox, sync), prepared on SQLite
	log     *slog.Logger
	name    string
	session Session

	outbox  *outbox
	onError func(error)
	errMu   sync.Mutex
	err     error // what made the session unusable, if anything
	stop    chan struct{}
	bg      sync.WaitGroup // the session check of a client started offline

	encMu    sync.Mutex
	enc      Encryption
	encRooms encryptionCache
	mediaState
	syncing syncState // whether a Syncer runs and is current (sync.go)
	gates   roomGates // encrypted sends and removals, per room (rotation.go)

	closeOnce sync.Once

	aclSource ServerACLSource // Options.CaseRoomACL
}

// ErrNoDatabase is returned by New when Options.DB is nil.
var ErrNoDatabase = errors.New("matrix: Options.DB is required (see OpenDatabase)")

// New returns a client for the account in opts: the session stored under opts.SessionName if
// there is one, else a new login with opts.Login, which is then stored. Pending sends from a
// previous run resume.
//
// A stored session is checked with the homeserver. When the homeserver cannot be reached, New
// still succeeds (the client starts offline: Send stores, and items go out when the server is
// back) and the session is checked in the background; a token found revoked then is reported
// by Err and Options.OnError. When the homeserver answers that the token was revoked, New logs
// in again with opts.Login, as the same user.
//
// A session name is one account: when opts ask for another user (Options.UserID, or the user of
// a Password or AppService login) than the session stored under the name, New fails with an
// error matching ErrSessionInUse.
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
	c := &Client{db: db, q: storage.NewStatements(db), name: opts.SessionName, log: opts.Logger.With("session", opts.SessionName),
		onError: opts.OnError, stop: make(chan struct{})}
	c.aclSource = opts.CaseRoomACL
	sessions := sessionStore{db}

	sess, err := sessions.load(ctx, opts.SessionName)
	if err != nil {
		return nil, err
	}
	var revoked *Session
	if sess != nil {
		if err := checkOwner(opts.SessionName, opts, sess.UserID); err != nil {
			return nil, err
		}
		err := c.useSession(ctx, opts, sess)
		switch {
		case err == nil:
			return c.start(ctx, opts)
		case errors.Is(err, ErrUnreachable):
			c.log.Warn("homeserver unreachable; starting offline with the stored session", "user", sess.UserID, "err", err)
			cl, err := c.start(ctx, opts)
			if err == nil {
				c.bg.Add(1)
				go c.checkSession(opts, sess)
			}
			return cl, err
		case !errors.Is(err, ErrUnknownToken) || opts.Login == nil:
			return nil, err
		}
		c.log.Warn("stored session was revoked; logging in again", "user", sess.UserID, "device", sess.DeviceID)
		if opts.HomeserverURL == "" {
			opts.HomeserverURL = sess.HomeserverURL // the same server, a new device
		}
		revoked = sess
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
	if revoked != nil && sess.UserID != revoked.UserID {
		// The pending sends of the revoked session are that user's: another account must
		// not send them, nor take over its session name.
		return nil, fmt.Errorf("%w: %w: session %q is %s, the new login is %s", ErrLogin, ErrSessionInUse, opts.SessionName, revoked.UserID, sess.UserID)
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

// sessionCheckTimeout bounds how long New waits for the homeserver to confirm a stored session
// before it starts offline.
const sessionCheckTimeout = 10 * time.Second

// useSession builds the mautrix clients for sess and checks with the homeserver that its token
// is still good. When the homeserver cannot be reached it returns an error matching
// ErrUnreachable, with the clients built.
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
	send.DefaultHTTPRetries = 0
	// Asked without mautrix's retries: a homeserver that is down is reported at once, not
	// after a minute of backoff.
	checkCtx, cancel := context.WithTimeout(ctx, sessionCheckTimeout)
	defer cancel()
	resp, err := send.Whoami(checkCtx)
	if err != nil {
		err = wrapErr(err)
		if ctx.Err() == nil && (errors.Is(err, ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)) {
			c.mx, c.send, c.session = mx, send, *sess
			if !errors.Is(err, ErrUnreachable) {
				err = &unreachableError{err}
			}
		}
		return fmt.Errorf("matrix: check session of %s: %w", sess.UserID, err)
	}
	if resp.UserID != sess.UserID {
		return fmt.Errorf("matrix: stored session is for %s but the homeserver says %s", sess.UserID, resp.UserID)
	}
	c.mx, c.send, c.session = mx, send, *sess
	return nil
}

// checkSession asks the homeserver, until it answers, whether the stored session of a client
// that started offline is still good. A refused token holds the outbox and is reported.
func (c *Client) checkSession(opts Options, sess *Session) {
	defer c.bg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 1; ; attempt++ {
		resp, err := c.send.Whoami(ctx)
		err = wrapErr(err)
		switch {
		case err == nil && resp.UserID == sess.UserID:
			c.log.Info("homeserver reachable; stored session is good", "user", sess.UserID)
			return
		case err == nil:
			c.outbox.hold(fmt.Errorf("%w: stored session is for %s but the homeserver says %s", ErrUnknownToken, sess.UserID, resp.UserID))
			return
		case errors.Is(err, ErrUnknownToken):
			c.outbox.hold(err)
			return
		case ctx.Err() != nil:
			return
		}
		if !backoff.Sleep(ctx, backoff.Delay(attempt, opts.Outbox.MinRetryDelay+250*time.Millisecond, 15*time.Second)) {
			return
		}
	}
}

// recordErr records why the session cannot be used, unless something was recorded before.
func (c *Client) recordErr(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// Err returns what made the client's session unusable while it ran, or nil: an error matching
// ErrUnknownToken when the homeserver refused the stored token. Sends stay pending meanwhile;
// close the client and call New with Options.Login to log in again and send them.
func (c *Client) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
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
		if c.stop != nil {
			close(c.stop)
		}
		c.bg.Wait()
		if c.outbox != nil {
			c.outbox.close()
		}
		_ = c.q.Close() // a Syncer still stopping runs its queries unprepared
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
