package mailbridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"golang.org/x/oauth2"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// imapSetup is a homeserver with a room the officer reads, a Dovecot, and a gateway routing
// cases@agency.example into the room.
type imapSetup struct {
	srv   *matrixtest.Server
	bot   *matrix.Client
	room  id.RoomID
	inbox *matrixtest.Recorder
	imap  *dovecot
	gw    *mailbridge.Gateway
	logs  *logRecorder
}

func newIMAPSetup(t *testing.T, d dovecotOptions, dsn string) *imapSetup {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	s := &imapSetup{srv: matrixtest.NewServer(t), imap: startDovecot(t, d), logs: &logRecorder{t: t}}
	s.bot = s.srv.NewClient(t, "mailbot")
	officer := s.srv.NewClient(t, "officer")
	s.room = roomWith(t, s.bot, officer, false)
	s.inbox = matrixtest.NewRecorder(t, officer, s.room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	if err != nil {
		t.Fatal(err)
	}
	opts := mailbridge.Options{Client: s.bot, Router: router, Logger: slog.New(s.logs)}
	if dsn != "" {
		db, err := matrix.OpenDatabase(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		opts.DB = db
	}
	s.gw, _ = startGateway(t, opts)
	return s
}

// poller returns IMAP options for the test's Dovecot with its password, quick to retry.
func (s *imapSetup) options(mailboxes ...mailbridge.IMAPMailbox) mailbridge.IMAPOptions {
	return mailbridge.IMAPOptions{
		Addr: s.imap.Addr, Security: "none", Username: s.imap.User, Password: s.imap.Password,
		Mailboxes: mailboxes, PollInterval: 200 * time.Millisecond, IdleRestart: 2 * time.Second,
		MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond,
		Logger: slog.New(s.logs),
	}
}

// runPoller starts a poller of g and returns a function that stops it and checks that Run
// returned context.Canceled; defer it (before the test's end closes the gateway).
func runPoller(t *testing.T, g *mailbridge.Gateway, opts mailbridge.IMAPOptions) (stop func()) {
	t.Helper()
	p, err := g.NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}
}

// run starts a poller and returns a function that stops it and waits for Run to return.
func (s *imapSetup) run(t *testing.T, opts mailbridge.IMAPOptions) (stop func()) {
	t.Helper()
	p, err := s.gw.NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			// At the test's end, t.Context() also closes the gateway: ErrClosed then.
			if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, mailbridge.ErrClosed) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitOnce waits until every subject is in the room, then checks that each is there once.
func (s *imapSetup) waitOnce(t *testing.T, subjects ...string) {
	t.Helper()
	for _, subj := range subjects {
		s.inbox.Wait(t, subjectLine(subj))
	}
	for _, subj := range subjects {
		if n := count(s.inbox, subjectLine(subj)); n != 1 {
			t.Errorf("%s posted %d times, want once", subj, n)
		}
	}
}

// imapMail is a mail as it sits in the case mailbox.
func imapMail(subject string) string {
	return mail("clerk@agency.example", subject, strings.ReplaceAll(subject, " ", "-")+"@agency.example", "About "+subject)
}

// TestIMAPArrivesOnce: mail already in a mailbox and mail appended while the poller idles
// arrive in the room once each, are flagged \Seen after, and a second mailbox routed by its
// mails' To header has its mail moved away after.
func TestIMAPArrivesOnce(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{}, "")
	c := s.imap.Client(t)
	if err := c.Create("Routed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Done", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMail(t, c, "INBOX", imapMail("Existing 1"))
	appendMail(t, c, "INBOX", imapMail("Existing 2"))
	appendMail(t, c, "Routed", imapMail("Routed 1"))
	appendMail(t, c, "Routed", strings.Replace(imapMail("Nobody"), "To: cases@", "To: nobody@", 1))
	s.run(t, s.options(
		mailbridge.IMAPMailbox{Name: "INBOX", Address: "cases@agency.example", Flag: `\Seen`},
		mailbridge.IMAPMailbox{Name: "Routed", MoveTo: "Done"},
	))
	s.waitOnce(t, "Existing 1", "Existing 2", "Routed 1")

	// While the poller idles.
	appendMail(t, c, "INBOX", imapMail("New 1"))
	appendMail(t, c, "Routed", imapMail("Routed 2"))
	s.waitOnce(t, "New 1", "Routed 2")
	s.waitOnce(t, "Existing 1", "Existing 2", "Routed 1")
	if n := count(s.inbox, subjectLine("Nobody")); n != 0 {
		t.Errorf("mail for an unrouted address posted %d times", n)
	}

	matrixtest.Eventually(t, func() error {
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			return err
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{Flags: true}).Collect()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if !hasFlag(m.Flags, imap.FlagSeen) {
				return fmt.Errorf("INBOX message %d is not \\Seen: %v", m.SeqNum, m.Flags)
			}
		}
		return nil
	})
	matrixtest.Eventually(t, func() error {
		routed, err := c.Status("Routed", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return err
		}
		done, err := c.Status("Done", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return err
		}
		// The unrouted mail stays where it was, for a person to see.
		if *routed.NumMessages != 1 || *done.NumMessages != 2 {
			return fmt.Errorf("Routed has %d, Done %d; want 1 and 2", *routed.NumMessages, *done.NumMessages)
		}
		return nil
	})
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if strings.EqualFold(string(g), string(f)) {
			return true
		}
	}
	return false
}

// TestIMAPRestart: a poller stopped and started again, also one stopped in the middle of a
// batch, posts nothing twice and misses nothing, including the mail that came while it was
// stopped.
func TestIMAPRestart(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{}, "")
	c := s.imap.Client(t)
	opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
	opts.BatchSize = 3
	var all []string
	add := func(n int, prefix string) {
		for i := range n {
			subj := fmt.Sprintf("%s %d", prefix, i)
			appendMail(t, c, "INBOX", imapMail(subj))
			all = append(all, subj)
		}
	}
	add(4, "First")
	stop := s.run(t, opts)
	s.waitOnce(t, all...)
	stop()

	add(4, "While stopped")
	stop = s.run(t, opts)
	s.waitOnce(t, all...)

	// Stopped in the middle of a batch: as soon as the first of many is in the room.
	add(12, "Batch")
	s.inbox.Wait(t, subjectLine("Batch 0"))
	stop()
	s.run(t, opts)
	s.waitOnce(t, all...)
}

// TestIMAPUIDValidity: the mailbox is deleted and made again (so the server gives it a new
// UIDVALIDITY) while the poller runs; its mail, old and new, is in the room once each.
func TestIMAPUIDValidity(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{}, "")
	c := s.imap.Client(t)
	if err := c.Create("Cases", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	before := uidValidity(t, c, "Cases")
	appendMail(t, c, "Cases", imapMail("Old 1"))
	appendMail(t, c, "Cases", imapMail("Old 2"))
	s.run(t, s.options(mailbridge.IMAPMailbox{Name: "Cases", Address: "cases@agency.example"}))
	s.waitOnce(t, "Old 1", "Old 2")

	if err := c.Delete("Cases").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Cases", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if after := uidValidity(t, c, "Cases"); after == before {
		t.Fatalf("UIDVALIDITY stayed %d after the mailbox was made again", after)
	}
	// The same two mails again (a restore), and a new one: the new one has UID 3, so a poller
	// that kept the old checkpoint (last UID 2) would post it, but not the restored ones.
	appendMail(t, c, "Cases", imapMail("Old 1"))
	appendMail(t, c, "Cases", imapMail("Old 2"))
	appendMail(t, c, "Cases", imapMail("New after resync"))
	appendMail(t, c, "Cases", imapMail("Newer after resync"))
	s.waitOnce(t, "Old 1", "Old 2", "New after resync", "Newer after resync")
	if !s.logs.has(func(r slog.Record) bool { return strings.Contains(r.Message, "UIDVALIDITY changed") }) {
		t.Error("no log record says that UIDVALIDITY changed")
	}
}

// TestIMAPPollingFallback: a server without IDLE is asked again every PollInterval.
func TestIMAPPollingFallback(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{NoIdle: true}, "")
	c := s.imap.Client(t)
	s.run(t, s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"}))
	matrixtest.Eventually(t, func() error {
		if !s.logs.has(func(r slog.Record) bool { return r.Message == "polling IMAP mailbox" && attr(r, "idle") == "false" }) {
			return errors.New("the poller has not started polling without IDLE")
		}
		return nil
	})
	appendMail(t, c, "INBOX", imapMail("Polled 1"))
	s.waitOnce(t, "Polled 1")
	appendMail(t, c, "INBOX", imapMail("Polled 2"))
	s.waitOnce(t, "Polled 1", "Polled 2")
}

// TestIMAPIdle: with IDLE, mail is seen as the server reports it: with IdleRestart and
// PollInterval far beyond the test's wait, nothing else could find it. And IDLE is ended and
// issued again after IdleRestart, with no warnings, and mail after that is still seen.
func TestIMAPIdle(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{}, "")
	c := s.imap.Client(t)
	idling := func() error {
		if !s.logs.has(func(r slog.Record) bool { return r.Message == "polling IMAP mailbox" && attr(r, "idle") == "true" }) {
			return errors.New("the poller is not idling yet")
		}
		return nil
	}
	t.Run("prompt", func(t *testing.T) {
		opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
		opts.IdleRestart, opts.PollInterval = 29*time.Minute, time.Hour
		stop := s.run(t, opts)
		defer stop()
		matrixtest.Eventually(t, idling)
		appendMail(t, c, "INBOX", imapMail("Idle 1"))
		s.waitOnce(t, "Idle 1")
		appendMail(t, c, "INBOX", imapMail("Idle 2"))
		s.waitOnce(t, "Idle 1", "Idle 2")
	})
	t.Run("restart", func(t *testing.T) {
		opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
		opts.IdleRestart, opts.PollInterval = 200*time.Millisecond, time.Hour
		s.run(t, opts)
		restarts := func() int {
			n := 0
			for _, r := range s.logs.records() {
				if r.Message == "IDLE ended after IdleRestart; mailbox selected again" {
					n++
				}
			}
			return n
		}
		matrixtest.Eventually(t, func() error {
			if n := restarts(); n < 3 {
				return fmt.Errorf("IDLE issued again %d times, want 3", n)
			}
			return nil
		})
		appendMail(t, c, "INBOX", imapMail("Idle 3"))
		s.waitOnce(t, "Idle 1", "Idle 2", "Idle 3")
		if s.logs.has(func(r slog.Record) bool { return r.Level >= slog.LevelWarn }) {
			t.Errorf("warnings while idling: %v", s.logs.messages())
		}
	})
}

// tokenEndpoint is a fake OAuth 2.0 token introspection endpoint (RFC 7662) that Dovecot's
// oauth2 passdb asks: the identity provider is the fake, Dovecot is real. A token is active
// until revoked.
type tokenEndpoint struct {
	mu      sync.Mutex
	active  map[string]bool
	queries atomic.Int32
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.queries.Add(1)
	_ = r.ParseForm()
	e.mu.Lock()
	ok := e.active[r.PostForm.Get("token")]
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if ok {
		fmt.Fprint(w, `{"active": true, "username": "cases"}`)
		return
	}
	fmt.Fprint(w, `{"active": false}`)
}

// TestIMAPOAuth: XOAUTH2 and OAUTHBEARER logins with a token from an oauth2.TokenSource,
// checked by Dovecot against the (fake) introspection endpoint; a revoked token is a
// refused login (ErrIMAPLogin), tried again with backoff, and never in the logs.
func TestIMAPOAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	tokens := &tokenEndpoint{active: map[string]bool{"good-token-4711": true}}
	hs := httptest.NewServer(tokens)
	t.Cleanup(hs.Close)
	s := newIMAPSetup(t, dovecotOptions{Introspection: hs.URL + "/introspect"}, "")
	c := s.imap.Client(t)
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		t.Run(mech, func(t *testing.T) {
			if err := c.Create(mech, nil).Wait(); err != nil {
				t.Fatal(err)
			}
			opts := s.options(mailbridge.IMAPMailbox{Name: mech, Address: "cases@agency.example"})
			opts.Password, opts.Mechanism = "", mech
			opts.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "good-token-4711"})
			before := tokens.queries.Load()
			s.run(t, opts)
			appendMail(t, c, mech, imapMail("Token "+mech))
			s.waitOnce(t, "Token "+mech)
			if tokens.queries.Load() == before {
				t.Error("Dovecot did not ask the introspection endpoint")
			}
		})
	}
	for i, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		t.Run("revoked "+mech, func(t *testing.T) {
			tokens.mu.Lock()
			tokens.active["revoked-token-0815"] = false
			tokens.mu.Unlock()
			opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
			opts.Password, opts.Mechanism = "", mech
			opts.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "revoked-token-0815"})
			stop := s.run(t, opts)
			s.waitRefusals(t, 3*(i+1))
			stop()
		})
	}
	s.logs.mustNotContain(t, "good-token-4711", "revoked-token-0815", s.imap.Password)
}

// TestIMAPWrongPassword: a wrong password is a refused login, typed, retried with backoff,
// and not in the logs.
func TestIMAPWrongPassword(t *testing.T) {
	s := newIMAPSetup(t, dovecotOptions{}, "")
	opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
	opts.Password = "wrong-password-1234"
	s.run(t, opts)
	s.waitRefusals(t, 3)
	s.logs.mustNotContain(t, "wrong-password-1234", s.imap.Password)
}

// waitRefusals waits until n refused logins were logged, each with an error wrapping
// ErrIMAPLogin.
func (s *imapSetup) waitRefusals(t *testing.T, n int) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		refused := 0
		for _, r := range s.logs.records() {
			r.Attrs(func(a slog.Attr) bool {
				if err, ok := a.Value.Any().(error); ok && a.Key == "err" && errors.Is(err, mailbridge.ErrIMAPLogin) {
					refused++
				}
				return true
			})
		}
		if refused < n {
			return fmt.Errorf("%d refused logins logged, want %d", refused, n)
		}
		return nil
	})
}

// TestIMAPOnePollerPerMailbox: on PostgreSQL, two pollers for the same mailbox (as two gateway
// instances would run) take turns through an advisory lock: one polls, the other waits, and
// every mail is posted once.
func TestIMAPOnePollerPerMailbox(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite, Dovecot and PostgreSQL")
	}
	s := newIMAPSetup(t, dovecotOptions{}, pgtest.New(t))
	c := s.imap.Client(t)
	opts := s.options(mailbridge.IMAPMailbox{Address: "cases@agency.example"})
	polling := func() int {
		n := 0
		for _, r := range s.logs.records() {
			if r.Message == "polling IMAP mailbox" {
				n++
			}
		}
		return n
	}
	stopFirst := s.run(t, opts)
	matrixtest.Eventually(t, func() error {
		if polling() != 1 {
			return errors.New("the first poller has not selected the mailbox yet")
		}
		return nil
	})
	s.run(t, opts)
	var subjects []string
	for i := range 6 {
		subjects = append(subjects, fmt.Sprintf("Shared %d", i))
		appendMail(t, c, "INBOX", imapMail(subjects[i]))
	}
	s.waitOnce(t, subjects...)
	if !s.logs.has(func(r slog.Record) bool { return strings.Contains(r.Message, "polled by another gateway instance") }) {
		t.Error("the second poller never found the mailbox locked")
	}
	if n := polling(); n != 1 {
		t.Errorf("%d pollers selected the mailbox, want 1", n)
	}
	// The first stops: the second takes over.
	stopFirst()
	matrixtest.Eventually(t, func() error {
		if n := polling(); n != 2 {
			return fmt.Errorf("%d sessions started, want 2", n)
		}
		return nil
	})
	appendMail(t, c, "INBOX", imapMail("After takeover"))
	s.waitOnce(t, append(subjects, "After takeover")...)
}

// logRecorder keeps the gateway's log records for the test to check, and writes them to the
// test's log with -v.
type logRecorder struct {
	t    *testing.T
	mu   sync.Mutex
	recs []slog.Record
	with []slog.Attr
	root *logRecorder
}

func (l *logRecorder) base() *logRecorder {
	if l.root != nil {
		return l.root
	}
	return l
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(l.with...)
	b := l.base()
	b.mu.Lock()
	b.recs = append(b.recs, r)
	b.mu.Unlock()
	if testing.Verbose() {
		b.t.Log(recordText(r))
	}
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{t: l.t, with: append(append([]slog.Attr{}, l.with...), as...), root: l.base()}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

func (l *logRecorder) records() []slog.Record {
	b := l.base()
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]slog.Record(nil), b.recs...)
}

func (l *logRecorder) has(match func(slog.Record) bool) bool {
	for _, r := range l.records() {
		if match(r) {
			return true
		}
	}
	return false
}

func (l *logRecorder) messages() []string {
	var out []string
	for _, r := range l.records() {
		out = append(out, recordText(r))
	}
	return out
}

// mustNotContain fails the test if a log record has one of the secrets in its text.
func (l *logRecorder) mustNotContain(t *testing.T, secrets ...string) {
	t.Helper()
	for _, line := range l.messages() {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("a secret is in the log: %q", strings.ReplaceAll(line, s, "<the secret>"))
			}
		}
	}
}

func recordText(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	return b.String()
}

func attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}
