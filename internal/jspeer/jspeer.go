// Package jspeer runs the matrix-js-sdk peer of e2ee/testdata/jspeer (peer.mjs) for tests:
// a reader that sees a room as Element does, with js-sdk's own crypto. It needs Node.js 18 or
// later and the peer's npm packages, which scripts/test.sh installs.
package jspeer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Line is one line the peer writes (see peer.mjs for the types and fields).
type Line struct {
	Type          string     `json:"type"`
	UserID        id.UserID  `json:"user_id"`
	DeviceID      string     `json:"device_id"`
	EventID       id.EventID `json:"event_id"`
	Sender        id.UserID  `json:"sender"`
	Body          string     `json:"body"`
	Encrypted     bool       `json:"encrypted"`
	MsgType       string     `json:"msgtype"`
	FormattedBody string     `json:"formatted_body"`
	Thread        id.EventID `json:"thread"`
	File          []byte     `json:"file_b64"`
	FileError     string     `json:"file_error"`
	Reason        string     `json:"reason"`
	OK            bool       `json:"ok"`
	Message       string     `json:"message"`
}

// Peer is peer.mjs running in Node.
type Peer struct {
	lines  chan Line // closed when its stdout ends
	stderr *logBuffer
	stdin  io.Writer
}

// Dir is the peer's directory in this module.
func Dir(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("jspeer: cannot find the module's directory")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "e2ee", "testdata", "jspeer")
}

// Require fails the test when Node or the peer's npm packages are missing, so that a test can
// find out before it starts a homeserver.
func Require(tb testing.TB) {
	tb.Helper()
	command(tb)
}

// command returns Node's path and the peer's directory, failing the test when either is
// missing.
func command(tb testing.TB) (node, dir string) {
	tb.Helper()
	dir = Dir(tb)
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatalf("the js-sdk peer needs Node.js 18 or later: run scripts/test.sh, which installs it (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		tb.Fatalf("the js-sdk peer needs its npm packages: run scripts/test.sh, or `npm ci` in %s (%v)", dir, err)
	}
	return node, dir
}

// Start runs the peer as user (a registered localpart with password) in room on the
// homeserver at hsURL, with more PEER_ settings in env ("PEER_NO_ECHO=1"). It fails the test
// when Node or the npm packages are missing. The peer is stopped when the test ends, and its
// log shown if the test failed.
func Start(t *testing.T, hsURL, user, password string, room id.RoomID, env ...string) *Peer {
	t.Helper()
	node, dir := command(t)
	cmd := exec.Command(node, "peer.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PEER_HS="+hsURL, "PEER_USER="+user, "PEER_PASSWORD="+password, "PEER_ROOM="+string(room), "PEER_TIMEOUT_MS=240000")
	cmd.Env = append(cmd.Env, env...)
	stdin, err := cmd.StdinPipe() // the peer exits when it closes, even if the test process dies
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{lines: make(chan Line, 64), stderr: &logBuffer{}, stdin: stdin}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the js peer: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var l Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Type == "" {
				fmt.Fprintf(p.stderr, "%s\n", sc.Bytes())
				continue
			}
			p.lines <- l
		}
		close(p.lines)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		go func() {
			for range p.lines {
			}
		}()
		stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("js peer's log (last 150 lines):\n%s", p.stderr.tail(150))
		}
	})
	return p
}

// Expect returns the next line of type typ, skipping others; it fails the test when the peer
// fails, exits, or writes none within timeout.
func (p *Peer) Expect(t *testing.T, typ string, timeout time.Duration) Line {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			switch {
			case !ok:
				t.Fatalf("the js peer exited while the test waited for %q", typ)
			case l.Type == "fatal":
				t.Fatalf("the js peer failed: %s", l.Message)
			case l.Type == typ:
				return l
			case l.Type == "utd":
				t.Logf("js peer cannot decrypt %s yet: %s", l.EventID, l.Reason)
			}
		case <-timer.C:
			t.Fatalf("the js peer wrote no %q in %v", typ, timeout)
		}
	}
}

// Decrypt has the peer try to decrypt raw, an event as the server serves it (with its room
// ID), and returns the peer's "decrypt_result": OK with Body, or Reason.
func (p *Peer) Decrypt(t *testing.T, raw *event.Event) Line {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cmd": "decrypt", "event": raw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("send the js peer a decrypt command: %v", err)
	}
	return p.Expect(t, "decrypt_result", time.Minute)
}

// logBuffer collects the peer's log from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var _ io.Writer = (*logBuffer)(nil)

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
