package e2ee_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRestartNoUTD re-executes this test binary as the bot; init runs it before the testing
// framework starts.
const envRestartChild = "SAMTAL_E2EE_RESTART_CHILD"

func init() {
	if os.Getenv(envRestartChild) != "1" {
		return
	}
	ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	writeStats(os.Getenv("CHILD_STATS"), matrix.SyncStats{}) // SIGTERM stops it cleanly from now on
	if err := restartChild(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "restart child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// askSuffix marks the messages of alice the bot answers, with confirmPrefix and the body.
const (
	askSuffix     = " (please confirm)"
	confirmPrefix = "confirmed: "
)

// restartChild is the bot of TestRestartNoUTD: an encrypted client with a Syncer, its session
// and keys in CHILD_DB, that accepts CHILD_ALICE's invites, records every message from her as
// "run, event ID, encrypted, body" in CHILD_OUT (synced to disk before the handler returns)
// and answers those that ask for it. It keeps its Syncer's counters in CHILD_STATS. It stops
// cleanly when ctx ends, at whatever point it has reached.
func restartChild(ctx context.Context) error {
	db, err := matrix.OpenDatabase(ctx, os.Getenv("CHILD_DB"))
	if err != nil {
		return err
	}
	defer db.Close()
	var dying *dieAtWrite
	if n, _ := strconv.Atoi(os.Getenv("CHILD_DIE_AT_WRITE")); n > 0 {
		dying = &dieAtWrite{DatabaseLogger: db.Log, at: int64(n)}
		db.Log = dying
	}
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: os.Getenv("CHILD_URL"),
		Login:         matrix.Password(os.Getenv("CHILD_USER"), os.Getenv("CHILD_PASSWORD")),
		DB:            db,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: testKey}); err != nil {
		return err
	}
	if dying != nil {
		dying.armed.Store(true) // from now on, writes of to-device handling only (see dieAtWrite)
	}
	out, err := os.OpenFile(os.Getenv("CHILD_OUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	alice, run := id.UserID(os.Getenv("CHILD_ALICE")), os.Getenv("CHILD_RUN")
	inviters := []id.UserID{alice}
	if inviter := os.Getenv("CHILD_INVITER"); inviter != "" {
		inviters = append(inviters, id.UserID(inviter))
	}
	s := c.NewSyncer(matrix.SyncOptions{Timeout: time.Second, AutoJoin: &matrix.AutoJoinPolicy{Users: inviters}})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		if e.Sender != alice {
			return nil
		}
		if _, err := fmt.Fprintf(out, "%s\t%s\t%v\t%s\n", run, e.ID, e.Mautrix.WasEncrypted, e.Text()); err != nil {
			return err
		}
		if err := out.Sync(); err != nil {
			return err
		}
		if strings.HasSuffix(e.Text(), askSuffix) {
			_, err := e.Reply(ctx, matrix.Text(confirmPrefix+e.Text()))
			return err
		}
		return nil
	})
	statsPath := os.Getenv("CHILD_STATS")
	go func() { // a SIGKILL loses at most the last 50 ms of counts
		for range time.Tick(50 * time.Millisecond) {
			writeStats(statsPath, s.Stats())
		}
	}()
	err = s.Run(ctx)
	writeStats(statsPath, s.Stats())
	return err
}

// dieAtWrite is a fault injector (no real server can be told to do this): a database logger
// that kills its own process with SIGKILL right after the at-th write, once armed, to the
// tables that handling an encrypted to-device message writes: the Olm session it advances, the
// hash that marks it seen, and the room key it carries. dbutil reports every statement of the
// database and of its children (mautrix's crypto store among them) to the root's logger after
// the statement ran, so the write is done, and committed unless a transaction holds it.
type dieAtWrite struct {
	dbutil.DatabaseLogger
	at     int64
	armed  atomic.Bool
	writes atomic.Int64
}

var toDeviceTables = []string{"crypto_olm_session", "crypto_olm_message_hash", "crypto_megolm_inbound_session"}

func (d *dieAtWrite) QueryTiming(ctx context.Context, method, query string, args []any, nrows int, duration time.Duration, err error) {
	d.DatabaseLogger.QueryTiming(ctx, method, query, args, nrows, duration, err)
	if !d.armed.Load() || method != "Exec" || err != nil {
		return
	}
	q := strings.ToUpper(strings.TrimSpace(query))
	if !strings.HasPrefix(q, "INSERT") && !strings.HasPrefix(q, "UPDATE") && !strings.HasPrefix(q, "DELETE") {
		return
	}
	if !slices.ContainsFunc(toDeviceTables, func(table string) bool { return strings.Contains(query, table) }) {
		return
	}
	if d.writes.Add(1) == d.at {
		fmt.Fprintf(os.Stderr, "dieAtWrite: killing myself after write %d (%s)\n", d.at, strings.Fields(q)[0])
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

func writeStats(path string, st matrix.SyncStats) {
	raw, _ := json.Marshal(st)
	if os.WriteFile(path+".tmp", raw, 0o600) == nil {
		_ = os.Rename(path+".tmp", path)
	}
}

// TestRestartNoUTD: a bot restarted 20 times during a conversation, mostly with SIGKILL at
// random moments (while starting, syncing, decrypting, answering), reads every message and
// has nothing left undecryptable; its answers, encrypted after restarts, are all readable.
func TestRestartNoUTD(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: restarts a bot process 20 times (about 30 s)")
	}
	const restarts = 20
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	ctx := t.Context()
	bot := newBotProcess(t, srv, alice.c.UserID(), "")
	room, err := alice.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "restarts", Invite: []id.UserID{srv.UserID("bot")}})
	if err != nil {
		t.Fatal(err)
	}

	// Run 0 logs in, uploads the device's keys and joins; only then do kills start. (A kill
	// between the first key upload and the store's note of it is another story: see Enable's
	// ErrStoreLost.)
	bot.start(0)
	waitJoined(t, alice.c, room, srv.UserID("bot"))

	// Alice talks all along, while the bot comes and goes.
	sendCtx, stopSending := context.WithCancel(ctx)
	var sent []string
	sendErr := make(chan error, 1)
	go func() {
		defer close(sendErr)
		for i := 1; sendCtx.Err() == nil; i++ {
			body := fmt.Sprintf("msg %04d", i)
			if i%4 == 0 {
				body += askSuffix
			}
			p, err := alice.c.Send(sendCtx, room, matrix.Text(body), matrix.SendOptions{})
			if err == nil {
				_, err = p.Wait(sendCtx)
			}
			if sendCtx.Err() != nil {
				return // the message may or may not be out: it is not counted
			}
			if err != nil {
				sendErr <- err
				return
			}
			sent = append(sent, body)
			time.Sleep(50 * time.Millisecond)
		}
	}()

	killed := 0
	for run := range restarts {
		if run > 0 {
			bot.start(run)
		}
		time.Sleep(time.Duration(100+rand.IntN(2000)) * time.Millisecond)
		if run%5 == 4 {
			bot.stop(syscall.SIGTERM)
		} else {
			bot.stop(syscall.SIGKILL)
			killed++
		}
	}
	stopSending()
	if err := <-sendErr; err != nil {
		t.Fatalf("alice's send: %v", err)
	}

	// The last run catches up with what was said while the bot was down.
	bot.start(restarts)
	waitFor(t, "the last run's first sync", func() bool { return bot.runStats(restarts).Batches > 0 })
	var asked []string
	for _, body := range sent {
		if strings.HasSuffix(body, askSuffix) {
			asked = append(asked, body)
		}
	}
	bot.waitSeen(t, "alice", sent)
	for _, body := range asked {
		if answer := alice.got.wait(t, confirmPrefix+body); !answer.Mautrix.WasEncrypted {
			t.Errorf("the bot's answer %s came unencrypted", answer.ID)
		}
	}
	for body, ids := range answers(alice.got) {
		if len(ids) > 1 {
			t.Errorf("the bot sent %q %d times: %v", body, len(ids), slices.Collect(maps.Keys(ids)))
		}
	}
	bot.stop(syscall.SIGTERM)

	bot.checkNoneUndecryptable()
	total := bot.stats()
	if total.Rejected != 0 {
		t.Errorf("the bot refused %d events for good", total.Rejected)
	}
	t.Logf("%d runs (%d killed), %d messages from alice, %d answered; the bot's counters, summed over the runs: %d undecryptable on arrival, %d decrypted late, %d refused",
		restarts+1, killed, len(sent), len(asked), total.Undecryptable, total.LateDecrypted, total.Rejected)
}

// newBotProcess sets up the restart tests' bot: the user "bot" of srv (registered here), run
// as a child process with its database in a new folder, recording the messages of watched and
// accepting invites from watched and inviter (if not empty). Its log's warnings, errors and
// kills are printed if the test fails.
func newBotProcess(t *testing.T, srv *matrixtest.Server, watched, inviter id.UserID) *botProcess {
	t.Helper()
	_, password := srv.RegisterUser(t, "bot")
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the bot's warnings, errors and kills, run by run:\n%s", grepLines(filepath.Join(dir, "bot.log"), "=== run", "level=WARN", "level=ERROR", "dieAtWrite"))
		}
	})
	env := append(os.Environ(),
		envRestartChild+"=1",
		"CHILD_DB="+filepath.Join(dir, "bot.db"),
		"CHILD_URL="+srv.URL,
		"CHILD_USER=bot",
		"CHILD_PASSWORD="+password,
		"CHILD_ALICE="+string(watched),
		"CHILD_OUT="+filepath.Join(dir, "seen.tsv"),
	)
	if inviter != "" {
		env = append(env, "CHILD_INVITER="+string(inviter))
	}
	return &botProcess{t: t, dir: dir, env: env}
}

// waitJoined waits until user has joined room, as c sees it.
func waitJoined(t testing.TB, c *matrix.Client, room id.RoomID, user id.UserID) {
	t.Helper()
	waitFor(t, string(user)+" to join", func() bool {
		members, err := c.Mautrix().JoinedMembers(t.Context(), room)
		if err != nil {
			return false
		}
		_, joined := members.Joined[user]
		return joined
	})
}

// botProcess is the restart tests' bot, run after run, with one log for all runs.
type botProcess struct {
	t   *testing.T
	dir string
	env []string

	cmd  *exec.Cmd
	done chan struct{}
	run  int
}

func (b *botProcess) logPath() string { return filepath.Join(b.dir, "bot.log") }

// start starts run number run.
func (b *botProcess) start(run int) {
	b.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.t.Fatal(err)
	}
	log, err := os.OpenFile(b.logPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	defer log.Close()
	fmt.Fprintf(log, "=== run %d\n", run)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(b.env, fmt.Sprintf("CHILD_RUN=%d", run), "CHILD_STATS="+b.statsPath(run))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.cmd, b.done, b.run = cmd, done, run
	b.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
}

// stop stops the running bot with sig. A run that ended on its own, or did not stop cleanly on
// SIGTERM, fails the test.
func (b *botProcess) stop(sig syscall.Signal) {
	b.t.Helper()
	if sig == syscall.SIGTERM {
		// Before the child catches SIGTERM, the signal kills it like SIGKILL.
		waitFor(b.t, "the bot to start", func() bool {
			_, err := os.Stat(b.statsPath(b.run))
			return err == nil
		})
	}
	select {
	case <-b.done:
		b.t.Fatalf("run %d of the bot ended on its own: %v\n%s", b.run, b.cmd.ProcessState, b.logTail(60))
	default:
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		b.t.Fatalf("run %d of the bot did not stop on %v in 15 s\n%s", b.run, sig, b.logTail(60))
	}
	if sig == syscall.SIGTERM && !b.cmd.ProcessState.Success() {
		b.t.Fatalf("run %d of the bot ended with %v after SIGTERM\n%s", b.run, b.cmd.ProcessState, b.logTail(60))
	}
}

// seen returns the bodies of the messages the bot recorded, failing the test on one that was
// handed out without having been encrypted.
func (b *botProcess) seen() map[string]bool {
	b.t.Helper()
	f, err := os.Open(filepath.Join(b.dir, "seen.tsv"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		b.t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 4)
		if len(parts) != 4 {
			continue
		}
		if parts[2] != "true" {
			b.t.Fatalf("the bot was handed %s (%q) unencrypted in an encrypted room", parts[1], parts[3])
		}
		seen[parts[3]] = true
	}
	return seen
}

// waitSeen waits until the bot has read every one of bodies, failing the test with the list of
// those it never read.
func (b *botProcess) waitSeen(t testing.TB, from string, bodies []string) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		seen := b.seen()
		var missing []string
		for _, body := range bodies {
			if !seen[body] {
				missing = append(missing, body)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the bot never read %d of %s's %d messages: %q", len(missing), from, len(bodies), missing)
		}
		return nil
	})
}

// checkNoneUndecryptable fails the test if the stopped bot's database still holds events
// waiting for their keys.
func (b *botProcess) checkNoneUndecryptable() {
	b.t.Helper()
	db, err := matrix.OpenDatabase(b.t.Context(), filepath.Join(b.dir, "bot.db"))
	if err != nil {
		b.t.Fatal(err)
	}
	defer db.Close()
	var utd int
	if err := db.QueryRow(b.t.Context(), `SELECT count(*) FROM samtal_utd`).Scan(&utd); err != nil {
		b.t.Fatal(err)
	}
	if utd != 0 {
		b.t.Errorf("%d events are still undecryptable", utd)
	}
}

func (b *botProcess) statsPath(run int) string {
	return filepath.Join(b.dir, fmt.Sprintf("stats-%02d.json", run))
}

// runStats returns the counters run left behind, as of its last 50 ms at worst.
func (b *botProcess) runStats(run int) matrix.SyncStats {
	var st matrix.SyncStats
	if raw, err := os.ReadFile(b.statsPath(run)); err == nil {
		_ = json.Unmarshal(raw, &st)
	}
	return st
}

// stats sums the counters of the runs so far.
func (b *botProcess) stats() matrix.SyncStats {
	var total matrix.SyncStats
	for run := 0; run <= b.run; run++ {
		st := b.runStats(run)
		total.Undecryptable += st.Undecryptable
		total.LateDecrypted += st.LateDecrypted
		total.Rejected += st.Rejected
	}
	return total
}

func (b *botProcess) logTail(n int) string {
	raw, _ := os.ReadFile(b.logPath())
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// grepLines returns the lines of the file at path that contain one of subs.
func grepLines(path string, subs ...string) string {
	raw, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// answers returns the IDs of the bot's answers alice got, by body.
func answers(b *inbox) map[string]map[id.EventID]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]map[id.EventID]bool{}
	for _, e := range b.evts {
		if body := e.Text(); strings.HasPrefix(body, confirmPrefix) {
			if out[body] == nil {
				out[body] = map[id.EventID]bool{}
			}
			out[body][e.ID] = true
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after matrixtest.WaitTimeout with what
// it waited for: a generous bound, so that the test fails on a lost event, never on timing.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// TestKillDuringToDeviceHandling kills the bot (SIGKILL, from inside, by a fault-injecting
// database logger) right after each write in turn of its handling of a new room key, restarts
// it, and checks that it reads the message the key unlocks, with the key it was sent and not
// one recovered by a key request or a backup. Before these writes shared one transaction, a
// kill after the Olm session's write lost the room key for good.
func TestKillDuringToDeviceHandling(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: restarts a bot process about 10 times (about 30 s)")
	}
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	ctx := t.Context()
	bot := newBotProcess(t, srv, alice.c.UserID(), "")
	env := bot.env
	room, err := alice.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "to-device kills", Invite: []id.UserID{srv.UserID("bot")}})
	if err != nil {
		t.Fatal(err)
	}
	bot.start(0)
	waitJoined(t, alice.c, room, srv.UserID("bot"))
	send(t, alice, room, matrix.Text("hello"))
	waitFor(t, "the bot to read the first message", func() bool { return bot.seen()["hello"] })
	bot.stop(syscall.SIGTERM)

	run, kills := 1, 0
	for at := 1; ; at++ {
		// While the bot is down, alice starts a new room key and sends with it: the bot's
		// first sync brings the key (a to-device message) and the message.
		if err := alice.m.OlmMachine().CryptoStore.RemoveOutboundGroupSession(ctx, room); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("message under key %d", at)
		send(t, alice, room, matrix.Text(body))

		bot.env = append(env, fmt.Sprintf("CHILD_DIE_AT_WRITE=%d", at))
		bot.start(run)
		run++
		died := false
		waitFor(t, "the bot to die or read "+body, func() bool {
			select {
			case <-bot.done:
				died = true
				return true
			default:
				return bot.seen()[body]
			}
		})
		if !died {
			// Fewer writes than at: every write has had its kill.
			bot.stop(syscall.SIGTERM)
			break
		}
		kills++
		bot.env = env
		bot.start(run)
		run++
		waitFor(t, "the restarted bot to read "+body, func() bool { return bot.seen()[body] })
		bot.stop(syscall.SIGTERM)
	}
	if kills == 0 {
		t.Fatal("the fault injector never fired: no write of to-device handling was seen")
	}

	db, err := matrix.OpenDatabase(ctx, filepath.Join(bot.dir, "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(ctx, `SELECT session_id, key_source FROM crypto_megolm_inbound_session WHERE account_id LIKE '%/@bot:%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	keys := 0
	for rows.Next() {
		var session, source string
		if err := rows.Scan(&session, &source); err != nil {
			t.Fatal(err)
		}
		keys++
		if source != string(id.KeySourceDirect) {
			t.Errorf("room key %s came by %q, not directly from alice: it was lost and recovered", session, source)
		}
	}
	if keys < kills+1 {
		t.Errorf("the bot holds %d room keys, want at least %d", keys, kills+1)
	}
	t.Logf("killed the bot after each of %d writes of its to-device handling in turn; it holds %d room keys", kills, keys)
}
