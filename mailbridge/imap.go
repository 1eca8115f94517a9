package mailbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/oauth2"

	"github.com/samtalhq/samtal/internal/backoff"
)

// IMAPOptions configure a Poller. Addr, Username, a Password or TokenSource, and one mailbox
// are required; every other zero value is a working default. All fields but TLSConfig,
// TokenSource and Logger are plain data, for a daemon's config file.
type IMAPOptions struct {
	Addr              string             // host:port of the IMAP server; required
	Security          string             // "tls" (implicit TLS, the default), "starttls", or "none" (plain text: only for a server on loopback)
	TLSConfig         *tls.Config        // nil means the system's roots, with the host name of Addr
	Username          string             // the login name; required
	Password          string             // for LOGIN; unused when TokenSource is set
	TokenSource       oauth2.TokenSource // OAuth 2.0 access tokens for XOAUTH2 or OAUTHBEARER (Microsoft 365, Google); wins over Password
	Mechanism         string             // with TokenSource: "XOAUTH2" (the default) or "OAUTHBEARER"
	Mailboxes         []IMAPMailbox      // the mailboxes to poll, each on a connection of its own; at least one
	IdleRestart       time.Duration      // IDLE is ended and issued again after this; 0 means 25 minutes, more than 29 is taken as 29 (RFC 2177)
	PollInterval      time.Duration      // how often a server without IDLE is asked for new mail; 0 means 1 minute
	MinReconnectDelay time.Duration      // first wait after a lost connection or refused login; 0 means 1 s
	MaxReconnectDelay time.Duration      // longest wait between connection attempts; 0 means 5 minutes
	BatchSize         int                // messages spooled per round (one UID SEARCH); 0 means 50
	// TrustAuthServID is the authserv-id (RFC 8601) the mailbox's own server writes in its
	// Authentication-Results, such as "mx.agency.example": the top-most such field's SPF
	// result, dmarc=pass and aligned DKIM pass count for the mail's DMARC verdict, and so for
	// a route's SenderPolicy, AllowSenders and MembersOnly (imap_policy.go, imap_sender.go).
	// Empty: none is trusted, only DKIM we verify, and SPF is none.
	TrustAuthServID string
	Logger          *slog.Logger // nil means the Gateway's; message content, passwords and tokens are never logged
}

// IMAPMailbox is one mailbox a Poller takes mail from.
type IMAPMailbox struct {
	// Name is the mailbox, such as "INBOX" (the default) or "Cases/Incoming".
	Name string
	// Address, when set, routes every mail of the mailbox as if sent to this address, through
	// the Gateway's Router (its room, template and sender allow-list). When empty, a mail is
	// routed by the recipients in its header (Delivered-To, X-Original-To, To, Cc), each one
	// the Router accepts, once per room.
	Address string
	// Flag, when set, is stored on a mail once it is posted: the homeserver has its events in
	// every room it goes to. A system flag such as `\Seen` or a keyword such as
	// "samtal-posted". Nothing is ever deleted. What was posted while the poller was stopped
	// is flagged when it runs again; a mail given up on (dead-lettered) is not flagged until
	// it is retried and posted.
	Flag string
	// MoveTo, when set, is where a mail is moved once it is posted, as for Flag (MOVE, or
	// COPY, STORE \Deleted and UID EXPUNGE where the server has UIDPLUS but no MOVE).
	MoveTo string
	// SkipExisting makes the first start (no checkpoint yet) begin after the mail already in
	// the mailbox. By default that mail is posted too.
	SkipExisting bool
}

// ErrIMAPLogin is wrapped by the errors of a refused IMAP login: a wrong password, a revoked
// or expired token, or a token source that gave none. The Poller logs it and tries again with
// backoff; an operator has to fix the credential. The error never contains the secret.
var ErrIMAPLogin = errors.New("mailbridge: IMAP login refused")

// ErrInvalidIMAPOptions is wrapped by NewPoller's errors: options that cannot work.
var ErrInvalidIMAPOptions = errors.New("mailbridge: invalid IMAP options")

// errMailboxBusy: another gateway instance holds the mailbox's advisory lock.
var errMailboxBusy = errors.New("mailbox is polled by another gateway instance")

// Poller takes mail from IMAP mailboxes into the Gateway's spool, from where it is converted
// and posted like mail received over SMTP. Make one with Gateway.NewPoller and call Run.
type Poller struct {
	g       *Gateway
	opts    IMAPOptions
	log     *slog.Logger
	account string // user@host:port, the checkpoint's key with the mailbox name
}

// NewPoller checks opts and returns a Poller for the gateway. It does no I/O.
func (g *Gateway) NewPoller(opts IMAPOptions) (*Poller, error) {
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return nil, fmt.Errorf("%w: Addr %q must be host:port", ErrInvalidIMAPOptions, opts.Addr)
	}
	if opts.Username == "" {
		return nil, fmt.Errorf("%w: Username is required", ErrInvalidIMAPOptions)
	}
	if opts.TokenSource == nil && opts.Password == "" {
		return nil, fmt.Errorf("%w: a Password or a TokenSource is required", ErrInvalidIMAPOptions)
	}
	switch strings.ToLower(opts.Security) {
	case "", "tls", "starttls":
	case "none":
		if host, _, _ := net.SplitHostPort(opts.Addr); !isLoopback(host) {
			return nil, fmt.Errorf("%w: Security none sends the credential in plain text; it is only for a server on loopback, not %s", ErrInvalidIMAPOptions, host)
		}
	default:
		return nil, fmt.Errorf("%w: Security %q must be tls, starttls or none", ErrInvalidIMAPOptions, opts.Security)
	}
	opts.Mechanism = strings.ToUpper(opts.Mechanism)
	switch opts.Mechanism {
	case "":
		opts.Mechanism = mechXOAuth2
	case mechXOAuth2, mechOAuthBearer:
	default:
		return nil, fmt.Errorf("%w: Mechanism %q must be XOAUTH2 or OAUTHBEARER", ErrInvalidIMAPOptions, opts.Mechanism)
	}
	if len(opts.Mailboxes) == 0 {
		return nil, fmt.Errorf("%w: no Mailboxes", ErrInvalidIMAPOptions)
	}
	opts.Mailboxes = slices.Clone(opts.Mailboxes)
	seen := map[string]bool{}
	for i := range opts.Mailboxes {
		mb := &opts.Mailboxes[i]
		if mb.Name == "" {
			mb.Name = "INBOX"
		}
		if seen[mb.Name] {
			return nil, fmt.Errorf("%w: mailbox %s named twice", ErrInvalidIMAPOptions, mb.Name)
		}
		seen[mb.Name] = true
		if mb.Address != "" {
			if _, err := g.router.Match(mb.Address); err != nil {
				return nil, fmt.Errorf("%w: mailbox %s: Address %s has no route", ErrInvalidIMAPOptions, mb.Name, mb.Address)
			}
		}
		if mb.MoveTo == mb.Name {
			return nil, fmt.Errorf("%w: mailbox %s: MoveTo is the mailbox itself", ErrInvalidIMAPOptions, mb.Name)
		}
	}
	if opts.IdleRestart <= 0 {
		opts.IdleRestart = 25 * time.Minute
	}
	opts.IdleRestart = min(opts.IdleRestart, 29*time.Minute)
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Minute
	}
	if opts.MinReconnectDelay <= 0 {
		opts.MinReconnectDelay = time.Second
	}
	if opts.MaxReconnectDelay <= 0 {
		opts.MaxReconnectDelay = 5 * time.Minute
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 50
	}
	log := opts.Logger
	if log == nil {
		log = g.log
	}
	account := opts.Username + "@" + opts.Addr
	return &Poller{g: g, opts: opts, log: log.With("component", "mailbridge/imap", "imap_server", opts.Addr), account: account}, nil
}

// Run polls every mailbox, each on a connection of its own, until ctx ends (it then returns
// ctx's error) or the Gateway is closed (ErrClosed). Lost connections and refused logins are
// logged and retried with backoff; they do not end Run. Call Run once per Poller; on SQLite,
// run one Poller per mailbox (on PostgreSQL an advisory lock makes sure of that).
func (p *Poller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.g.ctx, cancel)
	defer stop()
	done := make(chan struct{}, len(p.opts.Mailboxes))
	for i := range p.opts.Mailboxes {
		go func() {
			defer func() { done <- struct{}{} }()
			p.runMailbox(ctx, &p.opts.Mailboxes[i])
		}()
	}
	for range p.opts.Mailboxes {
		<-done
	}
	if p.g.ctx.Err() != nil {
		return ErrClosed
	}
	return context.Cause(ctx)
}

// runMailbox polls one mailbox until ctx ends, connecting again after every failure.
func (p *Poller) runMailbox(ctx context.Context, mb *IMAPMailbox) {
	log := p.log.With("mailbox", mb.Name)
	failures := 0
	for ctx.Err() == nil {
		working, err := p.session(ctx, log, mb)
		if ctx.Err() != nil {
			return
		}
		if working {
			failures = 0
		}
		failures++
		wait := backoff.Delay(failures, p.opts.MinReconnectDelay, p.opts.MaxReconnectDelay)
		switch {
		case errors.Is(err, errMailboxBusy):
			wait = p.opts.PollInterval
			log.Debug("mailbox is polled by another gateway instance; waiting", "retry_in", wait)
		case errors.Is(err, ErrIMAPCertificate):
			log.Error("IMAP server's certificate is not trusted (its CA belongs in IMAPOptions.TLSConfig, ca_file in the gateway's config); will retry", "attempt", failures, "retry_in", wait, "err", err)
		case errors.Is(err, ErrIMAPLogin):
			log.Error("IMAP login refused; will retry", "user", p.opts.Username, "attempt", failures, "retry_in", wait, "err", err)
		default:
			log.Warn("IMAP connection failed; will reconnect", "attempt", failures, "retry_in", wait, "err", err)
		}
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// session is one connection's life: lock, log in, select, then take new mail and wait for
// more, until an error or ctx ends. working reports whether it took new mail at least once,
// which resets the backoff.
func (p *Poller) session(ctx context.Context, log *slog.Logger, mb *IMAPMailbox) (working bool, err error) {
	lock, err := p.lock(ctx, mb.Name)
	if err != nil {
		return false, err
	}
	defer lock.release()

	newMail := make(chan struct{}, 1)
	c, err := p.dial(ctx, newMail)
	if err != nil {
		return false, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() }) // unblocks a command in flight
	defer stop()
	if err := p.login(c); err != nil {
		return false, err
	}
	sel, err := c.Select(mb.Name, nil).Wait()
	if err != nil {
		return false, fmt.Errorf("select mailbox %s: %w", mb.Name, err)
	}
	cp, err := p.startAt(ctx, log, mb, sel)
	if err != nil {
		return working, err
	}
	idle := c.Caps().Has(imap.CapIdle) || c.Caps().Has(imap.CapIMAP4rev2)
	log.Info("polling IMAP mailbox", "uid_validity", cp.uidValidity, "last_uid", cp.lastUID, "idle", idle)
	for {
		if err := lock.alive(ctx); err != nil {
			return working, err
		}
		posted := p.g.deliveries() // taken first: a mail delivered from here on wakes the wait
		if err := p.takeNew(ctx, log, c, mb, &cp); err != nil {
			return working, err
		}
		if err := p.afterPosted(ctx, log, c, mb, cp); err != nil {
			return working, err
		}
		working = true
		if !mb.afterPost() {
			posted = nil
		}
		woken, err := p.wait(ctx, c, idle, newMail, posted)
		if err != nil {
			return working, err
		}
		if !woken {
			if err := reselect(c, mb.Name, cp.uidValidity); err != nil {
				return working, err
			}
			if idle {
				log.Debug("IDLE ended after IdleRestart; mailbox selected again")
			}
		}
	}
}

// reselect selects the mailbox again and returns an error when it is gone or has a new
// UIDVALIDITY; the next session then resyncs. A server need not say so on the connection that
// had it selected (Dovecot goes on answering from the old mailbox, even to STATUS), so this
// runs whenever nothing woke the poller for IdleRestart or PollInterval.
func reselect(c *imapclient.Client, mailbox string, want uint32) error {
	sel, err := c.Select(mailbox, nil).Wait()
	if err != nil {
		return fmt.Errorf("select mailbox %s again: %w", mailbox, err)
	}
	if sel.UIDValidity != want {
		return fmt.Errorf("mailbox %s: UIDVALIDITY changed from %d to %d", mailbox, want, sel.UIDValidity)
	}
	return nil
}

// startAt returns the checkpoint to go on from: the stored one, or a new one for a first
// start or a changed UIDVALIDITY.
func (p *Poller) startAt(ctx context.Context, log *slog.Logger, mb *IMAPMailbox, sel *imap.SelectData) (imapCheckpoint, error) {
	cp, ok, err := p.g.spool.checkpoint(ctx, p.account, mb.Name)
	if err != nil {
		return cp, err
	}
	switch {
	case ok && cp.uidValidity == sel.UIDValidity:
		return cp, nil
	case ok:
		// The server renumbered the mailbox (it was recreated or restored): the old UIDs mean
		// nothing now, so every mail in it is read again. Those already posted are not posted
		// twice: their idempotency key comes from the Message-ID (or content) and the room.
		log.Warn("IMAP mailbox UIDVALIDITY changed; reading the whole mailbox again", "old_uid_validity", cp.uidValidity, "uid_validity", sel.UIDValidity)
		cp.uidValidity, cp.lastUID = sel.UIDValidity, 0
	default:
		cp.uidValidity, cp.lastUID = sel.UIDValidity, 0
		if mb.SkipExisting && sel.UIDNext > 0 {
			cp.lastUID = uint32(sel.UIDNext) - 1
		}
	}
	return cp, p.g.spool.saveCheckpoint(ctx, cp)
}

// takeNew spools every mail with a UID after the checkpoint, a batch at a time, moving the
// checkpoint with each.
func (p *Poller) takeNew(ctx context.Context, log *slog.Logger, c *imapclient.Client, mb *IMAPMailbox, cp *imapCheckpoint) error {
	for ctx.Err() == nil {
		var set imap.UIDSet
		set.AddRange(imap.UID(cp.lastUID+1), 0) // n:* also returns the highest UID when it is below n
		data, err := c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
		if err != nil {
			return fmt.Errorf("search new mail: %w", err)
		}
		var uids []imap.UID
		for _, uid := range data.AllUIDs() {
			if uint32(uid) > cp.lastUID {
				uids = append(uids, uid)
			}
		}
		if len(uids) == 0 {
			return nil
		}
		slices.Sort(uids)
		batch := uids[:min(len(uids), p.opts.BatchSize)]
		for _, uid := range batch {
			if err := p.takeOne(ctx, log, c, mb, *cp, uid); err != nil {
				return err
			}
			cp.lastUID = uint32(uid)
		}
	}
	return ctx.Err()
}

// takeOne fetches one mail and spools it with the checkpoint at its UID. A mail over the
// size limit, gone meanwhile, or routed nowhere only moves the checkpoint; it stays in the
// mailbox for a person to see, and is never flagged or moved.
func (p *Poller) takeOne(ctx context.Context, log *slog.Logger, c *imapclient.Client, mb *IMAPMailbox, cp imapCheckpoint, uid imap.UID) error {
	cp.lastUID = uint32(uid)
	raw, size, err := p.fetch(c, uid)
	if err != nil {
		return err
	}
	var r imapRouted
	switch {
	case raw == nil && size > p.g.opts.MaxMessageBytes:
		log.Warn("IMAP mail over the size limit left in the mailbox", "uid", uid, "bytes", size, "limit", p.g.opts.MaxMessageBytes)
	case raw == nil:
		log.Info("IMAP mail gone before it was read", "uid", uid)
	default:
		r = p.route(ctx, mb, raw)
		if len(r.targets) == 0 {
			log.Warn("IMAP mail routed nowhere left in the mailbox", "uid", uid)
		}
		for _, t := range r.targets {
			if t.refused != "" {
				log.Info("IMAP mail refused for a room: dead-lettered", "uid", uid, "room", t.room, "reason", t.refused, "dmarc", r.dmarc)
			}
		}
	}
	id, err := p.g.spool.storeIMAP(ctx, r.from, r.raw, r.targets, cp, mb.afterPost())
	if err != nil {
		return err
	}
	p.counted(r) // once it is spooled: a mail not spooled is fetched again
	if id == 0 {
		return nil
	}
	log.Info("mail accepted from IMAP", "uid", uid, "spool_id", id, "rooms", len(r.targets), "bytes", len(r.raw))
	p.g.kickFor(r.targets)
	return nil
}

// counted tells Options.Metrics what became of a mail taken from IMAP: its DMARC result, and
// each room's delivery that a route refused, which is dead from the start (OutcomeDead), as
// one given up on later is.
func (p *Poller) counted(r imapRouted) {
	if r.dmarc != "" {
		p.g.opts.Metrics.DMARC(r.dmarc)
	}
	for _, t := range r.targets {
		if t.refused != "" {
			p.g.opts.Metrics.Delivery(OutcomeDead)
		}
	}
}

// fetch returns the raw mail with uid and its size; nil when it is gone or too large.
func (p *Poller) fetch(c *imapclient.Client, uid imap.UID) ([]byte, int64, error) {
	set := imap.UIDSetNum(uid)
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		return nil, 0, fmt.Errorf("fetch size of mail %d: %w", uid, err)
	}
	size := int64(-1)
	for _, m := range msgs {
		if m.UID == uid {
			size = m.RFC822Size
		}
	}
	if size < 0 || size > p.g.opts.MaxMessageBytes {
		return nil, max(size, 0), nil
	}
	whole := &imap.FetchItemBodySection{Peek: true} // BODY.PEEK[]: reading sets no \Seen
	msgs, err = c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil {
		return nil, 0, fmt.Errorf("fetch mail %d: %w", uid, err)
	}
	for _, m := range msgs {
		if m.UID == uid {
			if raw := m.FindBodySection(whole); raw != nil {
				return raw, int64(len(raw)), nil
			}
		}
	}
	return nil, 0, nil
}

// wait returns when the mailbox may have new mail: the server said so during IDLE (woken is
// true), or IDLE was due to be issued again, or the poll interval passed on a server without
// IDLE; or when posted is closed (woken is true): a mail was delivered, which may be one to
// flag or move.
func (p *Poller) wait(ctx context.Context, c *imapclient.Client, idle bool, newMail, posted <-chan struct{}) (woken bool, err error) {
	if !idle {
		t := time.NewTimer(p.opts.PollInterval)
		defer t.Stop()
		select {
		case <-t.C:
			return false, nil
		case <-posted:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	cmd, err := c.Idle()
	if err != nil {
		return false, fmt.Errorf("start IDLE: %w", err)
	}
	t := time.NewTimer(p.opts.IdleRestart)
	defer t.Stop()
	select {
	case <-newMail:
		woken = true
	case <-posted:
		woken = true
	case <-t.C:
	case <-ctx.Done():
	case <-c.Closed():
	}
	if err := cmd.Close(); err != nil {
		return false, fmt.Errorf("end IDLE: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return false, fmt.Errorf("IDLE: %w", err)
	}
	return woken, ctx.Err()
}

// dial connects to the server as Security says and waits for its greeting. newMail gets a
// signal whenever the server reports a new message count.
func (p *Poller) dial(ctx context.Context, newMail chan<- struct{}) (*imapclient.Client, error) {
	opts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(data *imapclient.UnilateralDataMailbox) {
				if data.NumMessages != nil {
					select {
					case newMail <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	host, _, _ := net.SplitHostPort(p.opts.Addr)
	opts.TLSConfig = &tls.Config{ServerName: host}
	if p.opts.TLSConfig != nil {
		opts.TLSConfig = p.opts.TLSConfig.Clone()
		if opts.TLSConfig.ServerName == "" {
			opts.TLSConfig.ServerName = host
		}
	}
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: time.Minute}
	conn, err := d.DialContext(ctx, "tcp", p.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to IMAP server: %w", err)
	}
	var c *imapclient.Client
	switch strings.ToLower(p.opts.Security) {
	case "none":
		c = imapclient.New(conn, opts)
	case "starttls":
		c, err = imapclient.NewStartTLS(conn, opts)
		if err != nil {
			conn.Close()
			return nil, certificateError(fmt.Errorf("IMAP STARTTLS: %w", err))
		}
	default:
		tc, err := tlsHandshake(ctx, conn, opts.TLSConfig)
		if err != nil {
			conn.Close()
			return nil, err
		}
		c = imapclient.New(tc, opts)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, fmt.Errorf("IMAP greeting: %w", err)
	}
	return c, nil
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
