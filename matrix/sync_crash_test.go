package matrix_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The crash test re-executes this test binary as the bot; init runs it before the testing
// framework starts.
const envSyncChild = "SAMTAL_SYNC_CHILD"

func init() {
	if os.Getenv(envSyncChild) != "1" {
		return
	}
	if err := syncChild(); err != nil {
		fmt.Fprintln(os.Stderr, "sync child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// syncChild is the bot of TestSyncCrash: it records every message it is handed in a file,
// and kills itself with SIGKILL while handling the message SYNC_CHILD_KILL_AT. SIGTERM stops
// it cleanly.
func syncChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := matrix.OpenDatabase(ctx, os.Getenv("SYNC_CHILD_DB"))
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: os.Getenv("SYNC_CHILD_URL"),
		Login:         matrix.Password(os.Getenv("SYNC_CHILD_USER"), os.Getenv("SYNC_CHILD_PASSWORD")),
		SessionName:   os.Getenv("SYNC_CHILD_SESSION"),
		DB:            db,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	out, err := os.OpenFile(os.Getenv("SYNC_CHILD_OUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	s := c.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	s.OnMessage(recordTo(out, os.Getenv("SYNC_CHILD_RUN"), os.Getenv("SYNC_CHILD_KILL_AT")))
	return s.Run(ctx)
}

// recordTo returns a handler that appends "run, event ID, body" lines to f, synced to disk
// before it returns, and kills the process on the message killAt, after recording it.
func recordTo(f *os.File, run, killAt string) func(context.Context, *matrix.Event) error {
	return func(ctx context.Context, e *matrix.Event) error {
		if _, err := fmt.Fprintf(f, "%s\t%s\t%s\n", run, e.ID, e.Text()); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if killAt != "" && e.Text() == killAt {
			self, _ := os.FindProcess(os.Getpid())
			_ = self.Signal(os.Kill) // SIGKILL: no deferred function, no commit
			select {}
		}
		return nil
	}
}

// TestSyncCrash: a bot killed with SIGKILL in the middle of a batch handles that batch again
// after a restart, and never skips an event. Batches committed before the kill are not
// delivered again.
func TestSyncCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: kills and restarts a bot process (about 15 s)")
	}
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "crashbot")
	alice := srv.Client(t, "alice")
	dir := t.TempDir()
	dbPath, outPath := filepath.Join(dir, "bot.db"), filepath.Join(dir, "seen.tsv")
	msg := func(i int) string { return fmt.Sprintf("msg %02d", i) }

	// Run 0, in this process: the first sync, then messages 1 to 10 handled and committed.
	db, err := matrix.OpenDatabase(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	bot := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("crashbot", password), DB: db, SessionName: "crashbot"})
	room := syncRoom(t, alice, bot)
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	record := recordTo(out, "0", "")
	var lastSeenIn atomic.Uint64 // the batch count when message 10 was handled
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		if e.Text() == msg(10) {
			lastSeenIn.Store(s.Stats().Batches + 1)
		}
		return record(ctx, e)
	})
	stop := startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	for i := 1; i <= 10; i++ {
		mustSend(t, alice, room, msg(i))
	}
	syncWait(t, "message 10 to be handled and committed", func() bool {
		n := lastSeenIn.Load()
		return n > 0 && s.Stats().Batches >= n
	})
	stop()
	bot.Close()

	// Messages 11 to 30 wait for the bot, which runs as a child process from now on.
	for i := 11; i <= 30; i++ {
		mustSend(t, alice, room, msg(i))
	}
	env := append(os.Environ(),
		envSyncChild+"=1",
		"SYNC_CHILD_DB="+dbPath,
		"SYNC_CHILD_OUT="+outPath,
		"SYNC_CHILD_URL="+srv.URL,
		"SYNC_CHILD_USER=crashbot",
		"SYNC_CHILD_PASSWORD="+password,
		"SYNC_CHILD_SESSION=crashbot",
	)

	// Run 1 kills itself while handling message 17.
	child := startSyncChild(t, append(env, "SYNC_CHILD_RUN=1", "SYNC_CHILD_KILL_AT="+msg(17)))
	select {
	case <-child.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("run 1 did not die at %s\n%s", msg(17), child.stderr())
	}
	if ws, ok := child.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("run 1 ended with %v, want killed by SIGKILL\n%s", child.cmd.ProcessState, child.stderr())
	}

	// Run 2 goes on from the stored token until it has message 30, then is stopped cleanly.
	child = startSyncChild(t, append(env, "SYNC_CHILD_RUN=2"))
	// On a timeout, go on: the records say what was skipped.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-child.done:
			t.Fatalf("run 2 ended early: %v\n%s", child.cmd.ProcessState, child.stderr())
		default:
		}
		if slices.ContainsFunc(readSeen(t, outPath), func(r seenRecord) bool { return r.run == "2" && r.body == msg(30) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("run 2 did not handle %s within 30 s", msg(30))
			break
		}
	}
	_ = child.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-child.done:
		if !child.cmd.ProcessState.Success() {
			t.Errorf("run 2 ended with %v after SIGTERM\n%s", child.cmd.ProcessState, child.stderr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run 2 did not stop on SIGTERM")
	}

	seen := readSeen(t, outPath)
	count := map[string]int{}
	eventOf := map[string]id.EventID{}
	var runs [3][]string
	for _, r := range seen {
		count[r.body]++
		if prev, ok := eventOf[r.body]; ok && prev != r.event {
			t.Errorf("%s came as %s and as %s", r.body, prev, r.event)
		}
		eventOf[r.body] = r.event
		switch r.run {
		case "0":
			runs[0] = append(runs[0], r.body)
		case "1":
			runs[1] = append(runs[1], r.body)
		case "2":
			runs[2] = append(runs[2], r.body)
		}
	}
	for i := 1; i <= 30; i++ {
		switch n := count[msg(i)]; {
		case n == 0:
			t.Errorf("%s was skipped", msg(i))
		case n > 1 && (i <= 10 || i > 17):
			t.Errorf("%s was handled %d times; only the batch in flight at the kill (11..17) may repeat", msg(i), n)
		}
	}
	if count[msg(17)] != 2 {
		t.Errorf("%s, the message being handled at the kill, was handled %d times, want 2", msg(17), count[msg(17)])
	}
	if len(runs[1]) == 0 || runs[1][len(runs[1])-1] != msg(17) {
		t.Errorf("run 1 did not end at %s: %q", msg(17), runs[1])
	}
	// Run 2 starts at the beginning of the batch that was in flight and goes on in order.
	if len(runs[2]) == 0 || !slices.Contains(runs[1], runs[2][0]) {
		t.Errorf("run 2 did not start within the batch run 1 was handling: run 1 %q, run 2 %q", runs[1], runs[2])
	} else {
		var first int
		fmt.Sscanf(runs[2][0], "msg %d", &first)
		for i, b := range runs[2] {
			if b != msg(first+i) {
				t.Errorf("run 2 handled %q, want %s..%s in order", runs[2], msg(first), msg(30))
				break
			}
		}
	}
	if t.Failed() {
		t.Logf("run 0: %q\nrun 1: %q\nrun 2: %q", runs[0], runs[1], runs[2])
	}
}

type syncChildProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  strings.Builder
}

func (c *syncChildProcess) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err.Write(p)
}

func (c *syncChildProcess) stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err.String()
}

// startSyncChild runs this test binary as the bot of TestSyncCrash; done is closed when it ends.
func startSyncChild(t *testing.T, env []string) *syncChildProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &syncChildProcess{cmd: exec.Command(exe, "-test.run=^$"), done: make(chan struct{})}
	c.cmd.Env = env
	c.cmd.Stderr = c
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

type seenRecord struct {
	run   string
	event id.EventID
	body  string
}

func readSeen(t *testing.T, path string) []seenRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []seenRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) != 3 {
			continue // a line cut short by the kill
		}
		out = append(out, seenRecord{run: parts[0], event: id.EventID(parts[1]), body: parts[2]})
	}
	return out
}
