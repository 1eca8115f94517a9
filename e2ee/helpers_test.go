package e2ee_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// testKey is a pickle key for tests; real deployments use LoadOrCreatePickleKey.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func logger(t testing.TB) *slog.Logger {
	return logtest.Verbose(t, slog.LevelInfo)
}

// party is one encrypted samtal client with its database, as a bot or a person would run it.
type party struct {
	t        testing.TB
	srv      *matrixtest.Server
	dbPath   string
	db       *dbutil.Database
	user     string
	password string
	c        *matrix.Client
	m        *e2ee.Machine
	got      *inbox
	stop     func()
	sendOnly bool           // runs no Syncer, as a case system that only sends
	syncer   *matrix.Syncer // the running Syncer, unless sendOnly
	noJoin   bool           // accepts no invites by itself
	via      string         // the homeserver URL the client uses, if not srv.URL (a proxy)
	// dbLog, if set, wraps the database's logger before the client opens it (to inject a
	// fault after a given statement; dbutil reports each one after it ran).
	dbLog func(dbutil.DatabaseLogger) dbutil.DatabaseLogger
}

// newParty registers localpart and starts an encrypted client with a running Syncer.
func newParty(t testing.TB, srv *matrixtest.Server, localpart string) *party {
	t.Helper()
	_, pw := srv.RegisterUser(t, localpart)
	p := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), localpart+".db"), user: localpart, password: pw, got: &inbox{}}
	p.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(p.close)
	return p
}

// newSendOnlyParty registers localpart and starts an encrypted client that runs no Syncer.
func newSendOnlyParty(t testing.TB, srv *matrixtest.Server, localpart string) *party {
	t.Helper()
	_, pw := srv.RegisterUser(t, localpart)
	p := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), localpart+".db"), user: localpart, password: pw, got: &inbox{}, sendOnly: true}
	p.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(p.close)
	return p
}

// start opens the database, the client (stored session or password login) and encryption,
// and runs a Syncer that records messages.
func (p *party) start(opts e2ee.Options) {
	p.t.Helper()
	if err := p.startErr(opts); err != nil {
		p.t.Fatalf("%s: %v", p.user, err)
	}
}

func (p *party) startErr(opts e2ee.Options) error {
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, p.dbPath)
	if err != nil {
		return err
	}
	if p.dbLog != nil {
		db.Log = p.dbLog(db.Log)
	}
	url := p.srv.URL
	if p.via != "" {
		url = p.via
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: url, Login: matrix.Password(p.user, p.password), DB: db, Logger: logger(p.t)})
	if err != nil {
		db.Close()
		return err
	}
	m, err := e2ee.Enable(ctx, c, opts)
	if err != nil {
		c.Close()
		db.Close()
		return err
	}
	p.db, p.c, p.m = db, c, m
	if p.sendOnly {
		return nil
	}
	autoJoin := &matrix.AutoJoinPolicy{Servers: []string{p.srv.ServerName}}
	if p.noJoin {
		autoJoin = nil
	}
	// A short long-poll: syncedPast waits for batches, and an idle batch lasts Timeout.
	s := c.NewSyncer(matrix.SyncOptions{Timeout: 500 * time.Millisecond, AutoJoin: autoJoin})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error { p.got.add(evt); return nil })
	p.syncer = s
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(runCtx) }()
	p.stop = func() { cancel(); <-done }
	return nil
}

// stopSyncing stops the party's Syncer; the client goes on.
func (p *party) stopSyncing() {
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
}

// syncedPast waits until the party's Syncer has committed n more batches than it had when
// called: then every to-device message queued before the call has been handled.
func (p *party) syncedPast(n uint64) func() {
	p.t.Helper()
	start := p.syncer.Stats().Batches
	return func() {
		p.t.Helper()
		waitFor(p.t, p.user+"'s Syncer to go on", func() bool { return p.syncer.Stats().Batches >= start+n })
	}
}

func (p *party) close() {
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
	if p.c != nil {
		p.m.Close()
		p.c.Close()
		p.db.Close()
		p.c = nil
	}
}

// inbox records the messages a party's Syncer handed out.
type inbox struct {
	mu      sync.Mutex
	evts    []*matrix.Event
	changed chan struct{} // closed (and replaced) whenever a message is added
}

func (b *inbox) add(e *matrix.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.evts = append(b.evts, e)
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

// wait returns the first message with body as soon as it is there, failing the test after a
// minute.
func (b *inbox) wait(t testing.TB, body string) *matrix.Event {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		b.mu.Lock()
		for _, e := range b.evts {
			if e.Text() == body {
				b.mu.Unlock()
				return e
			}
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no message %q arrived", body)
			return nil
		}
	}
}

func (b *inbox) count(body string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.evts {
		if e.Text() == body {
			n++
		}
	}
	return n
}

// heldEvent is evt as the server serves it to reader (ciphertext, for an encrypted room), with
// its room ID. The server may acknowledge a send before it serves the event: heldEvent waits
// for it.
func heldEvent(t testing.TB, reader *party, room id.RoomID, evt id.EventID) *event.Event {
	t.Helper()
	var raw *event.Event
	matrixtest.Eventually(t, func() error {
		var err error
		raw, err = reader.c.Mautrix().GetEvent(t.Context(), room, evt)
		if err != nil {
			return fmt.Errorf("the server serves %s no event %s: %w", reader.user, evt, err)
		}
		return nil
	})
	raw.RoomID = room
	return raw
}
