package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// runGateway runs `samtal gateway --config gateway.yaml`, or its `spool` subcommands.
func runGateway(ctx context.Context, e *env, args []string) error {
	for i, a := range args {
		if a == "spool" {
			return runGatewaySpool(ctx, e, append(append([]string(nil), args[i+1:]...), args[:i]...))
		}
		if a == "hash-password" && i == 0 { // gwconfig part
			return runGatewayHashPassword(e, args[1:])
		}
	}
	fs := newFlags(e, "gateway")
	path := fs.String("config", envOr("SAMTAL_GATEWAY_CONFIG", "gateway.yaml"), "the gateway's configuration (env SAMTAL_GATEWAY_CONFIG); see docs/gateway.example.yaml")
	setUsage(fs, "gateway [--config FILE]\n       samtal gateway spool list|show ID|retry ID [--config FILE]\n       samtal gateway hash-password < password.txt",
		`Runs the mail gateway: mail received over SMTP is spooled durably and posted into the rooms
that the routes in the configuration name. It serves /metrics, /healthz and /readyz on the
configured HTTP address, and on SIGTERM finishes the SMTP transactions under way before it
stops. The first start logs in with SAMTAL_USER and SAMTAL_PASSWORD (or SAMTAL_ACCESS_TOKEN),
like every samtal command. 'spool list' shows the mail not delivered yet, 'spool show ID' one
of them, 'spool retry ID' revives a dead-lettered mail. 'hash-password' prints the bcrypt hash
of an SMTP submitter's password for smtp.auth.users.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadGatewayConfig(*path)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := cfg.check(ctx, e.log); err != nil { // gwconfig part
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	a := cfg.account()
	c, done, err := a.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	rg, err := startGateway(ctx, e, cfg, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "samtal gateway is running.\n\n  smtp  %s\n", rg.smtpAddr)
	if rg.smtpsAddr != "" { // gwconfig part
		fmt.Fprintf(e.stdout, "  smtps %s  (implicit TLS)\n", rg.smtpsAddr)
	}
	fmt.Fprintf(e.stdout, "  http  %s  (/metrics /healthz /readyz)\n\nStop with SIGTERM or Ctrl-C.\n", rg.httpAddr)
	<-ctx.Done()
	return rg.stop()
}

// account is the matrix account the configuration names.
func (cfg *gatewayConfig) account() *account {
	a := &account{homeserver: cfg.Matrix.Homeserver, db: cfg.Database, session: cfg.Matrix.Session, pickleKey: cfg.Matrix.PickleKeyFile}
	if a.session == "" {
		a.session = "default"
	}
	if cfg.Matrix.E2EE != nil && !*cfg.Matrix.E2EE {
		a.noE2EE = true
	}
	return a
}

// runningGateway is a gateway serving SMTP and HTTP, with a syncing client.
type runningGateway struct {
	e        *env
	gw       *mailbridge.Gateway
	smtpAddr string
	httpAddr string
	timeout  time.Duration // for Shutdown

	served  chan error // Serve's result
	serving atomic.Bool
	http    *http.Server
	stopBg  context.CancelFunc
	bg      sync.WaitGroup
	once    sync.Once
	stopErr error

	// gwconfig part:
	smtpsAddr string     // implicit TLS, or ""
	servedTLS chan error // ServeTLS's result, when smtpsAddr is set
}

// startGateway starts the gateway of cfg for client c: SMTP, delivery, a Syncer for c (which
// keeps what encryption needs current), and the HTTP endpoints.
func startGateway(ctx context.Context, e *env, cfg *gatewayConfig, c *matrix.Client) (*runningGateway, error) {
	routes, err := cfg.routes()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	router, err := mailbridge.NewRouter(routes...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	metrics := newGatewayMetrics()
	opts := mailbridge.Options{
		Client:          c,
		Router:          router,
		Domain:          cfg.SMTP.Domain,
		MaxMessageBytes: cfg.SMTP.MaxMessageBytes,
		MaxRecipients:   cfg.SMTP.MaxRecipients,
		MaxConnections:  cfg.SMTP.MaxConnections,
		MaxHeaderFields: cfg.SMTP.MaxHeaderFields,
		MinRetryDelay:   time.Duration(cfg.Delivery.MinRetryDelay),
		MaxRetryDelay:   time.Duration(cfg.Delivery.MaxRetryDelay),
		DeadLetterAfter: time.Duration(cfg.Delivery.DeadLetterAfter),
		Retention:       time.Duration(cfg.Delivery.Retention),
		ClaimLease:      time.Duration(cfg.Delivery.ClaimLease),
		Metrics:         metrics,
		Logger:          e.log,
	}
	if err := cfg.mailOptions(&opts, e.log); err != nil { // gwconfig part
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	gw, err := mailbridge.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	pollers, err := newPollers(ctx, cfg, gw) // gwconfig part
	if err != nil {
		_ = gw.Close()
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	metrics.reg.MustRegister(newSpoolCollector(gw))
	if f := cfg.Federation.watcher; f != nil { // imappolicy part: the list_url watcher's refreshes
		metrics.reg.MustRegister(newFederationCollector(f.w))
	}
	rg := &runningGateway{e: e, gw: gw, served: make(chan error, 1), timeout: time.Duration(cfg.ShutdownTimeout)}
	if rg.timeout <= 0 {
		rg.timeout = 30 * time.Second
	}
	smtpAddr := cfg.SMTP.Listen
	if smtpAddr == "" {
		smtpAddr = "127.0.0.1:2525"
	}
	var lc net.ListenConfig
	sl, err := lc.Listen(ctx, "tcp", smtpAddr)
	if err != nil {
		_ = gw.Close()
		return nil, fmt.Errorf("listen for SMTP on %s: %w", smtpAddr, err)
	}
	httpAddr := cfg.HTTP.Listen
	if httpAddr == "" {
		httpAddr = "127.0.0.1:9125"
	}
	hl, err := lc.Listen(ctx, "tcp", httpAddr)
	if err != nil {
		sl.Close()
		_ = gw.Close()
		return nil, fmt.Errorf("listen for HTTP on %s: %w", httpAddr, err)
	}
	rg.smtpAddr, rg.httpAddr = sl.Addr().String(), hl.Addr().String()
	tl, err := listenTLS(ctx, cfg) // gwconfig part: implicit TLS
	if err != nil {
		sl.Close()
		hl.Close()
		_ = gw.Close()
		return nil, err
	}

	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	rg.stopBg = stopBg
	rg.serving.Store(true)
	go func() {
		// Not ctx: stop shuts the SMTP server down gracefully.
		rg.served <- gw.Serve(context.WithoutCancel(ctx), sl)
		rg.serving.Store(false)
	}()
	rg.serveTLS(ctx, tl, pollers, bg) // gwconfig part
	rg.watchFederation(bg, cfg)       // gwsmall part: federation.list_url kept fresh
	// The gateway mostly sends: its sync (invites, the encryption's keys and members) can come
	// in batches, which saves the homeserver a sync per mail posted (each one's echo). It reads
	// what it syncs, so that the homeserver keeps no unread notifications for it.
	syncer := c.NewSyncer(matrix.SyncOptions{MinInterval: gatewaySyncInterval, MarkRead: true})
	rg.bg.Go(func() {
		if err := syncer.Run(bg); err != nil && bg.Err() == nil {
			e.log.Error("gateway: sync stopped", "err", err)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := rg.ready(r.Context(), c); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	rg.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	rg.bg.Go(func() { _ = rg.http.Serve(hl) })
	e.log.Info("gateway running", "smtp", rg.smtpAddr, "http", rg.httpAddr, "routes", len(routes))
	return rg, nil
}

// gatewaySyncInterval is the gateway's sync MinInterval.
const gatewaySyncInterval = 250 * time.Millisecond

// ready says why the gateway cannot do its work now, or nil: the database answers, the
// client's session is good and it syncs, and the SMTP listener is up.
func (rg *runningGateway) ready(ctx context.Context, c *matrix.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := rg.gw.SpoolStats(ctx); err != nil {
		return errors.New("database does not answer")
	}
	if err := c.Err(); err != nil {
		return errors.New("matrix session refused by the homeserver")
	}
	if !c.Syncing() {
		return errors.New("not syncing with the homeserver")
	}
	if !rg.serving.Load() {
		return errors.New("SMTP listener down")
	}
	return nil
}

// stop shuts the gateway down gracefully: SMTP transactions under way finish (within the
// configured shutdown_timeout), then delivery, sync and HTTP stop.
func (rg *runningGateway) stop() error {
	rg.once.Do(func() {
		rg.e.log.Info("gateway stopping: finishing SMTP transactions under way")
		ctx, cancel := context.WithTimeout(context.Background(), rg.timeout)
		defer cancel()
		err := rg.gw.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			rg.e.log.Warn("gateway: shutdown timeout; open connections were cut (their mail was not accepted)")
			err = nil
		}
		if serr := <-rg.served; !errors.Is(serr, mailbridge.ErrClosed) && err == nil {
			err = serr
		}
		if rg.servedTLS != nil { // gwconfig part
			if serr := <-rg.servedTLS; !errors.Is(serr, mailbridge.ErrClosed) && err == nil {
				err = serr
			}
		}
		rg.stopBg()
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		_ = rg.http.Shutdown(hctx)
		rg.bg.Wait()
		rg.stopErr = err
		rg.e.log.Info("gateway stopped")
	})
	return rg.stopErr
}

// runGatewaySpool runs `samtal gateway spool list|show ID|retry ID`.
func runGatewaySpool(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "gateway spool")
	path := fs.String("config", envOr("SAMTAL_GATEWAY_CONFIG", "gateway.yaml"), "the gateway's configuration (env SAMTAL_GATEWAY_CONFIG)")
	asJSON := fs.Bool("json", false, "print JSON")
	only := fs.String("state", "", "list only the deliveries in this state: pending, posted or dead") // gwsmall part
	setUsage(fs, "gateway spool list [--state pending|posted|dead]|show ID|retry ID|drop ID [--config FILE]", `Shows the mail in the gateway's spool that is not delivered to all its rooms yet, with the
state and age of each delivery: pending (waiting for its next attempt), posted (in the outbox,
waiting for the homeserver to take it) or dead (given up after dead_letter_after), and revives a
dead mail: 'retry ID' makes it pending again, and the running gateway posts it within its
max_retry_delay (IMAP mail that DNS deferred is checked again first). 'drop ID' deletes a dead mail that is not to be delivered (the spool keeps
dead mail until then; delivered mail goes after delivery.retention). It needs only the
database, not the homeserver; no mail content is shown.`)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: want 'spool list', 'spool show ID', 'spool retry ID' or 'spool drop ID'", errUsage)
	}
	var id int64
	switch rest[0] {
	case "list":
		if len(rest) != 1 {
			return fmt.Errorf("%w: 'spool list' takes no arguments", errUsage)
		}
	case "show", "retry", "drop":
		if len(rest) != 2 {
			return fmt.Errorf("%w: want 'spool %s ID'", errUsage, rest[0])
		}
		if id, err = strconv.ParseInt(rest[1], 10, 64); err != nil || id <= 0 {
			return fmt.Errorf("%w: %q is not a spool ID (a number from 'spool list')", errUsage, rest[1])
		}
	default:
		return fmt.Errorf("%w: unknown 'spool %s': want list, show, retry or drop", errUsage, rest[0])
	}
	switch *only { // gwsmall part
	case "", mailbridge.StatePending, mailbridge.StatePosted, mailbridge.StateDead:
	default:
		return fmt.Errorf("%w: --state %q: want pending, posted or dead", errUsage, *only)
	}
	cfg, err := loadGatewayConfig(*path)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	db, err := openExistingDB(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	sp, err := mailbridge.OpenSpool(ctx, db)
	if err != nil {
		return err
	}
	if rest[0] == "drop" {
		if err := sp.Drop(ctx, id); err != nil {
			if errors.Is(err, mailbridge.ErrNotInSpool) {
				return fmt.Errorf("%w: %w", matrix.ErrNotFound, err)
			}
			return err
		}
		fmt.Fprintf(e.stdout, "mail %d is dropped\n", id)
		return nil
	}
	if rest[0] == "retry" {
		if err := sp.Retry(ctx, id); err != nil {
			if errors.Is(err, mailbridge.ErrNotInSpool) {
				return fmt.Errorf("%w: %w", matrix.ErrNotFound, err)
			}
			return err
		}
		fmt.Fprintf(e.stdout, "mail %d is pending again\n", id)
		return nil
	}
	all, err := sp.Undelivered(ctx)
	if err != nil {
		return err
	}
	var list []mailbridge.SpooledMail
	for _, m := range all {
		if (rest[0] == "list" || m.ID == id) && (*only == "" || m.State() == *only) {
			list = append(list, m)
		}
	}
	if rest[0] == "show" && len(list) == 0 {
		return fmt.Errorf("%w: no undelivered mail %d in the spool", matrix.ErrNotFound, id)
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(list)
	}
	now := time.Now()
	if rest[0] == "show" {
		for _, m := range list {
			fmt.Fprintf(e.stdout, "mail        %d\nroom        %s\nrecipient   %s\nfrom        %s\nreceived    %s\nage         %s\nstate       %s\nattempts    %d\nlast error  %s\n\n",
				m.ID, m.Room, m.Recipient, m.MailFrom, m.ReceivedAt.UTC().Format(time.RFC3339), spoolAge(now, m.ReceivedAt), m.State(), m.Attempts, m.LastError)
		}
		return nil
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tAGE\tRECEIVED\tATTEMPTS\tROOM\tFROM")
	for _, m := range list {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.State(), spoolAge(now, m.ReceivedAt), m.ReceivedAt.UTC().Format(time.RFC3339), m.Attempts, m.Room, m.MailFrom)
	}
	return w.Flush()
}

// spoolAge is how long ago a mail was received, to the second ("0s" for one from a clock
// ahead of this machine's).
func spoolAge(now, received time.Time) string {
	return max(now.Sub(received), 0).Truncate(time.Second).String()
}

// openExistingDB opens a database that must exist: a SQLite file is not created.
func openExistingDB(ctx context.Context, dsn string) (*dbutil.Database, error) {
	if !storage.IsPostgres(dsn) {
		if _, err := os.Stat(dsn); err != nil {
			return nil, fmt.Errorf("%w: database %s: %w", matrix.ErrNotFound, dsn, err)
		}
	}
	return matrix.OpenDatabase(ctx, dsn)
}
