package mailbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/matrix"
)

// Options configure a Gateway. Client and Router are required; every other zero value is a
// working default.
type Options struct {
	Client          *matrix.Client   // posts into the rooms; required
	Router          *Router          // recipient address to room; required
	DB              *dbutil.Database // holds the spool; nil means the Client's database
	Addr            string           // where ListenAndServe listens; "" means "127.0.0.1:2525"
	Domain          string           // this server's name in the greeting; "" means the host name
	MaxMessageBytes int64            // largest mail accepted, advertised as SIZE; 0 means 25 MiB
	MaxRecipients   int              // recipients per mail; 0 means 50
	MaxHeaderFields int              // header fields per mail, more get 552 5.3.4; 0 means 1000
	MaxConnections  int              // SMTP connections at a time; more get 421 4.7.0; 0 means 100
	MaxLineLength   int              // longest line of a mail, in bytes; 0 means 64 KiB (RFC 5321 says 1000; real mail is longer)
	ReadTimeout     time.Duration    // per SMTP command; 0 means 5 minutes
	WriteTimeout    time.Duration    // per SMTP reply; 0 means 1 minute
	MinRetryDelay   time.Duration    // first wait after a failed delivery; 0 means 1 s
	MaxRetryDelay   time.Duration    // longest wait between deliveries; 0 means 5 minutes
	DeadLetterAfter time.Duration    // how long after receipt a failing delivery is given up (see Undelivered, Retry); 0 means 5 days
	// Retention is how long after its receipt a mail delivered into all its rooms stays in the
	// spool; then its raw message and envelope are deleted (on SQLite, overwritten in the file).
	// Threads and the outbox's idempotency keys are kept, so that later replies find their
	// conversation and the same mail again is still posted once. Dead and pending mail is kept
	// until delivered or dropped. 0 means 24 hours; negative: as soon as it is delivered, at the
	// next sweep (one a minute).
	Retention time.Duration
	Logger    *slog.Logger // nil means slog.Default(); message content is never logged

	// SMTP hardening, sender authentication, automated mail (issue 10, smtp part). The reply
	// codes of each limit are in the package documentation.
	TLSConfig       *tls.Config    // enables STARTTLS on Addr and implicit TLS (ServeTLS, TLSAddr); nil means no TLS and so no AUTH
	TLSAddr         string         // where ListenAndServe also listens for implicit TLS (submissions, port 465); "" means nowhere
	Authenticate    AuthFunc       // checks AUTH PLAIN credentials, offered only over TLS; nil means no AUTH
	TrustSubmitters bool           // mail of an authenticated submitter passes every route's AllowSenders and SenderPolicy
	MaxHeaderBytes  int            // size of the header block; more get 552 5.3.4; 0 (and the most) is 256 KiB
	MaxMIMEDepth    int            // multipart nesting; deeper gets 552 5.3.4; 0 means 50
	MaxMIMEParts    int            // MIME parts in one mail; more get 552 5.3.4; 0 means 1000
	SenderRate      int            // mails a minute from one sender (AUTH user, else envelope sender, else client IP); more get 450 4.7.1; 0 means no limit
	Resolver        Resolver       // every DNS lookup of SPF, DKIM and DMARC goes here; nil means the system's resolver (see DNSServer)
	TrustedRelays   []netip.Prefix // clients whose Authentication-Results are kept and whose SPF verdict is taken; from others they are renamed
	PostmasterRoom  string         // room (ID or alias) for postmaster@ of every routed domain without a postmaster route; "" means the domain's first route
	AuthTimeout     time.Duration  // for the SPF, DKIM and DMARC checks of one mail; 0 means 30 s
	// Federation answers, for routes with MembersOnly, whether an email domain is a member
	// agency's: a *federation.Watcher or *federation.List. nil makes those routes take nothing.
	Federation interface{ HasDomain(emailDomain string) bool }

	// Operations (spool claims, metrics):
	ClaimLease time.Duration // how long an instance holds the spool work it claimed (PostgreSQL, several instances); 0 means 30 s
	Metrics    Metrics       // receives counts of replies, deliveries and DMARC results; nil counts nothing
}

// Gateway receives mail over SMTP, spools it durably, and posts it into rooms.
type Gateway struct {
	opts   Options
	log    *slog.Logger
	router *Router
	client *matrix.Client
	spool  *spool
	server *smtp.Server
	rate   *rateLimiter // per-sender rate; nil means no limit
	open   atomic.Int64 // SMTP connections open, over all listeners

	ctx    context.Context // ends when Close is called; stops the delivery worker
	cancel context.CancelFunc
	wake   chan struct{} // a mail was spooled
	full   fullRooms     // rooms the worker found full (blocked.go)
	passes atomic.Int64  // passes of the delivery worker over the spool, for tests
	worker sync.WaitGroup
	data   sync.WaitGroup // DATA commands spooling right now
	conns  conns          // open SMTP connections, for Shutdown

	mu       sync.Mutex
	closed   bool
	done     chan struct{} // closed when Close has finished
	closeErr error

	// Confirmation by the outbox (confirm.go):
	outcomes    chan int64  // outbox items with an outcome, for the confirmer
	lostOutcome atomic.Bool // the queue was full: the confirmer looks at every posted delivery
	stopWatch   func()      // ends Client.WatchOutcomes

	// Flag or move after posting (imap_after.go):
	deliveredMu sync.Mutex
	deliveredCh chan struct{} // closed when a delivery is confirmed; nil until someone waits
}

// ErrMissingOption is wrapped by New's error when a required Option is not set.
var ErrMissingOption = errors.New("mailbridge: required option missing")

// New opens the spool (creating its tables in the database) and starts the delivery worker,
// which also delivers what an earlier run spooled. ctx bounds only the opening; the Gateway
// runs until Close. Call Serve or ListenAndServe to receive
// mail, and Close to stop.
func New(ctx context.Context, opts Options) (*Gateway, error) {
	if opts.Client == nil {
		return nil, fmt.Errorf("%w: Client", ErrMissingOption)
	}
	if opts.Router == nil {
		return nil, fmt.Errorf("%w: Router", ErrMissingOption)
	}
	if opts.DB == nil {
		opts.DB = opts.Client.Database()
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:2525"
	}
	if opts.Domain == "" {
		opts.Domain, _ = os.Hostname()
		if opts.Domain == "" {
			opts.Domain = "localhost"
		}
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 25 << 20
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = 50
	}
	if opts.MaxHeaderFields <= 0 {
		opts.MaxHeaderFields = 1000
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 100
	}
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = 64 << 10
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 5 * time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = time.Minute
	}
	if opts.MinRetryDelay <= 0 {
		opts.MinRetryDelay = time.Second
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 5 * time.Minute
	}
	if opts.DeadLetterAfter <= 0 {
		opts.DeadLetterAfter = 5 * 24 * time.Hour
	}
	if opts.Retention == 0 {
		opts.Retention = defaultRetention
	} else if opts.Retention < 0 {
		opts.Retention = 0
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := opts.hardeningDefaults(); err != nil {
		return nil, err
	}
	if opts.ClaimLease <= 0 {
		opts.ClaimLease = defaultClaimLease
	}
	if opts.Metrics == nil {
		opts.Metrics = noMetrics{}
	}
	sp, err := openSpool(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	sp.claims.lease, sp.metrics = opts.ClaimLease, opts.Metrics
	g := &Gateway{
		opts:   opts,
		log:    opts.Logger.With("component", "mailbridge"),
		router: opts.Router,
		client: opts.Client,
		spool:  sp,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	g.ctx, g.cancel = context.WithCancel(context.WithoutCancel(ctx))
	g.server = g.newSMTPServer()
	g.rate = newRateLimiter(opts.SenderRate)
	g.outcomes = make(chan int64, outcomeQueue)
	g.stopWatch = g.client.WatchOutcomes(g.onOutcome)
	g.worker.Add(3)
	go g.deliverLoop()
	go g.confirmLoop()
	go g.retainLoop()
	return g, nil
}

func (g *Gateway) newSMTPServer() *smtp.Server {
	s := smtp.NewServer(smtp.BackendFunc(g.newSession))
	s.Addr = g.opts.Addr
	s.Domain = g.opts.Domain
	s.MaxMessageBytes = g.opts.MaxMessageBytes
	s.MaxRecipients = g.opts.MaxRecipients
	s.MaxLineLength = g.opts.MaxLineLength
	s.ReadTimeout = g.opts.ReadTimeout
	s.WriteTimeout = g.opts.WriteTimeout
	s.EnableSMTPUTF8 = true // PIPELINING, 8BITMIME and ENHANCEDSTATUSCODES go-smtp always has
	s.ErrorLog = slogAdapter{g.log}
	g.hardenServer(s)
	return s
}

// Serve answers SMTP on l until Close is called or ctx ends, and then returns ErrClosed. With
// Options.TLSConfig it offers STARTTLS.
func (g *Gateway) Serve(ctx context.Context, l net.Listener) error {
	return g.serve(ctx, &limitListener{Listener: l, max: int64(g.opts.MaxConnections), open: &g.open, m: g.opts.Metrics})
}

func (g *Gateway) serve(ctx context.Context, l net.Listener) error {
	if g.isClosed() {
		l.Close()
		return ErrClosed
	}
	stop := context.AfterFunc(ctx, func() { _ = g.Close() })
	defer stop()
	g.log.Info("receiving mail", "addr", l.Addr().String())
	err := g.server.Serve(l)
	if err == nil || g.isClosed() || errors.Is(err, smtp.ErrServerClosed) { // nil: after Shutdown
		return ErrClosed
	}
	return fmt.Errorf("mailbridge: serve SMTP: %w", err)
}

// ListenAndServe listens on Options.Addr and serves, as Serve does, and with Options.TLSAddr
// also there with implicit TLS, as ServeTLS does. It returns when either stops.
func (g *Gateway) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", g.opts.Addr)
	if err != nil {
		return fmt.Errorf("mailbridge: listen on %s: %w", g.opts.Addr, err)
	}
	if g.opts.TLSAddr == "" {
		return g.Serve(ctx, l)
	}
	tl, err := lc.Listen(ctx, "tcp", g.opts.TLSAddr)
	if err != nil {
		l.Close()
		return fmt.Errorf("mailbridge: listen on %s: %w", g.opts.TLSAddr, err)
	}
	errs := make(chan error, 2)
	go func() { errs <- g.Serve(ctx, l) }()
	go func() { errs <- g.ServeTLS(ctx, tl) }()
	err = <-errs
	_ = g.Close()
	<-errs
	return err
}

// Close stops receiving (open connections are closed; a mail not yet answered with 250 is not
// accepted, so its sender tries again), waits for mail being spooled and for the delivery
// worker to stop. Spooled mail not yet posted is posted by the next Gateway on the same
// database. Close does not close the Client or the database.
func (g *Gateway) Close() error {
	g.mu.Lock()
	first := !g.closed
	g.closed = true
	g.mu.Unlock()
	if first {
		err := g.server.Close()
		if errors.Is(err, smtp.ErrServerClosed) {
			err = nil
		}
		g.data.Wait()
		g.cancel()
		g.worker.Wait()
		g.stopWatch()
		_ = g.spool.q.Close() // what still runs (an IMAP poller closing) runs unprepared
		g.closeErr = err
		close(g.done)
	}
	<-g.done // a second Close waits for the first
	return g.closeErr
}

func (g *Gateway) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// kick wakes the delivery worker.
func (g *Gateway) kick() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// slogAdapter gives go-smtp's connection errors to slog.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.log.Warn("smtp: " + fmt.Sprintf(format, v...))
}

func (a slogAdapter) Println(v ...any) {
	a.log.Warn("smtp: " + fmt.Sprint(v...))
}
