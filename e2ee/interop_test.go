package e2ee_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestInteropJSSDK: a samtal bot and matrix-js-sdk with its Rust crypto (what Element uses)
// talk in an encrypted room. Neither device is verified; each reads the other, and the server
// holds only ciphertext.
func TestInteropJSSDK(t *testing.T) {
	node := findJSPeer(t)
	srv := matrixtest.NewServer(t)
	bot := newParty(t, srv, "bot")
	jsUser, jsPassword := srv.RegisterUser(t, "element")
	ctx := t.Context()
	room, err := bot.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PrivateChat, Name: "interop", Invite: []id.UserID{jsUser}})
	if err != nil {
		t.Fatal(err)
	}

	peer := node.start(t, srv.URL, "element", jsPassword, room)
	// The bot shares its room key with the devices it knows when it first sends: the js device
	// must be on the server by then.
	ready := peer.expect(t, "ready", 2*time.Minute)
	if ready.UserID != jsUser {
		t.Fatalf("js peer is %s, want %s", ready.UserID, jsUser)
	}

	const question = "Ärende 4711: vilket beslut gäller?"
	asked := send(t, bot, room, matrix.Text(question))
	got := peer.expect(t, "decrypted", time.Minute)
	if got.EventID != asked || got.Body != question || got.Sender != bot.c.UserID() || !got.Encrypted {
		t.Errorf("js-sdk decrypted %+v, want %s's encrypted %s %q", got, bot.c.UserID(), asked, question)
	}

	answered := peer.expect(t, "sent", time.Minute)
	answer := bot.got.wait(t, "echo: "+question)
	if answer.ID != answered.EventID || answer.Sender != jsUser || !answer.Mautrix.WasEncrypted {
		t.Errorf("the bot got %s from %s (encrypted %v), want %s from %s, encrypted",
			answer.ID, answer.Sender, answer.Mautrix.WasEncrypted, answered.EventID, jsUser)
	}

	// What the server holds: ciphertext, in both directions.
	for _, evt := range []id.EventID{asked, answered.EventID} {
		held, err := bot.c.Mautrix().GetEvent(ctx, room, evt)
		if err != nil {
			t.Fatal(err)
		}
		if held.Type != event.EventEncrypted {
			t.Errorf("the server holds %s as %s, want m.room.encrypted", evt, held.Type.Type)
		}
		if bytes.Contains(held.Content.VeryRaw, []byte("4711")) {
			t.Errorf("plaintext on the server: %s", held.Content.VeryRaw)
		}
	}
}

// jsPeerLine is one line of the js peer's protocol (see testdata/jspeer/peer.mjs).
type jsPeerLine struct {
	Type      string     `json:"type"`
	UserID    id.UserID  `json:"user_id"`
	DeviceID  string     `json:"device_id"`
	EventID   id.EventID `json:"event_id"`
	Sender    id.UserID  `json:"sender"`
	Body      string     `json:"body"`
	Encrypted bool       `json:"encrypted"`
	Reason    string     `json:"reason"`
	OK        bool       `json:"ok"`
	Message   string     `json:"message"`
}

// jsPeer is testdata/jspeer/peer.mjs running in Node.
type jsPeer struct {
	lines  chan jsPeerLine // closed when its stdout ends
	stderr *lockedBuffer
	stdin  io.Writer
}

// jsPeerCommand is how to run the js peer: Node and the peer's directory.
type jsPeerCommand struct{ node, dir string }

// findJSPeer finds Node and the peer's npm packages, failing the test if they are missing:
// scripts/test.sh installs them.
func findJSPeer(t *testing.T) jsPeerCommand {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "jspeer"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("the js-sdk interop test needs Node.js 18 or later: run scripts/test.sh, which installs it (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		t.Fatalf("the js-sdk interop test needs its npm packages: run scripts/test.sh, or `npm ci` in %s (%v)", dir, err)
	}
	return jsPeerCommand{node: node, dir: dir}
}

// start starts the js peer as user in room. It is stopped when the test ends, and its log
// printed if the test failed.
// extraEnv are more PEER_ settings (see peer.mjs).
func (pc jsPeerCommand) start(t *testing.T, hsURL, user, password string, room id.RoomID, extraEnv ...string) *jsPeer {
	t.Helper()
	cmd := exec.Command(pc.node, "peer.mjs")
	cmd.Dir = pc.dir
	cmd.Env = append(os.Environ(), "PEER_HS="+hsURL, "PEER_USER="+user, "PEER_PASSWORD="+password, "PEER_ROOM="+string(room), "PEER_TIMEOUT_MS=240000")
	cmd.Env = append(cmd.Env, extraEnv...)
	stdin, err := cmd.StdinPipe() // the peer exits when it closes, even if this process dies
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &jsPeer{lines: make(chan jsPeerLine, 16), stderr: &lockedBuffer{}, stdin: stdin}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the js peer: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l jsPeerLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Type == "" {
				fmt.Fprintf(p.stderr, "%s\n", sc.Bytes())
				continue
			}
			p.lines <- l
		}
		close(p.lines)
		_ = cmd.Wait() // after the last read, as exec asks
	}()
	t.Cleanup(func() {
		go func() {
			for range p.lines { // nobody listens any more
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

// expect returns the peer's next line of type typ, skipping others; it fails the test if the
// peer gives up, exits, or says nothing of the kind within timeout.
func (p *jsPeer) expect(t *testing.T, typ string, timeout time.Duration) jsPeerLine {
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
			t.Fatalf("the js peer said no %q in %v", typ, timeout)
		}
	}
}

// decrypt has the peer try to decrypt raw, an event as the server serves it, and returns its
// answer.
func (p *jsPeer) decrypt(t *testing.T, raw *event.Event) jsPeerLine {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cmd": "decrypt", "event": raw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	return p.expect(t, "decrypt_result", time.Minute)
}

// lockedBuffer collects a process's output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last n lines written.
func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
