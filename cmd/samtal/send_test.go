package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSend sends each kind of message with the CLI and checks what another user receives.
func TestSend(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)

	dir := t.TempDir()
	report := filepath.Join(dir, "report.txt")
	if err := os.WriteFile(report, []byte("Case 4711\nDecision: approved\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var pngData bytes.Buffer
	if err := png.Encode(&pngData, image.NewGray(image.Rect(0, 0, 3, 2))); err != nil {
		t.Fatal(err)
	}
	photo := filepath.Join(dir, "photo") // no extension: the type comes from the content
	if err := os.WriteFile(photo, pngData.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		args      []string
		stdin     io.Reader
		msgType   event.MessageType
		body      string
		formatted string // a part of formatted_body; "" means none
		file      []byte // the uploaded file's content
		mime      string
	}{
		{name: "text", args: []string{"*", "hello", "world"}, msgType: event.MsgText, body: "hello world"},
		{name: "markdown", args: []string{"--markdown", "*", "**approved**"}, msgType: event.MsgText, body: "**approved**", formatted: "<strong>approved</strong>"},
		{name: "notice", args: []string{"--notice", "*", "build 17 passed"}, msgType: event.MsgNotice, body: "build 17 passed"},
		{name: "markdown notice", args: []string{"--markdown", "--notice", "*", "_done_"}, msgType: event.MsgNotice, body: "_done_", formatted: "<em>done</em>"},
		{name: "stdin", stdin: strings.NewReader("line one\nline two\n"), msgType: event.MsgText, body: "line one\nline two"},
		{name: "stdin dash", args: []string{"*", "-"}, stdin: strings.NewReader("piped"), msgType: event.MsgText, body: "piped"},
		{name: "file", args: []string{"--file", report, "*"}, msgType: event.MsgFile, body: "report.txt", file: []byte("Case 4711\nDecision: approved\n"), mime: "text/plain; charset=utf-8"},
		{name: "image", args: []string{"--file", photo, "*"}, msgType: event.MsgImage, body: "photo", file: pngData.Bytes(), mime: "image/png"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"send"}, tc.args...)
			if i := slices.Index(args, "*"); i >= 0 {
				args[i] = string(room)
			} else {
				args = append(args, string(room))
			}
			r := samtal(t, tc.stdin, args...)
			if r.code != exitOK {
				t.Fatalf("samtal %q: exit %d: %s", args, r.code, r.stderr)
			}
			evtID := id.EventID(strings.TrimSpace(r.stdout))
			got := waitEventID(t, bob, room, evtID).Content.AsMessage()
			if got.MsgType != tc.msgType || got.Body != tc.body || !strings.Contains(got.FormattedBody, tc.formatted) ||
				(tc.formatted == "") != (got.FormattedBody == "") {
				t.Errorf("bob received %s %q formatted %q; want %s %q with %q", got.MsgType, got.Body, got.FormattedBody, tc.msgType, tc.body, tc.formatted)
			}
			if tc.file == nil {
				return
			}
			if got.Info == nil || got.Info.MimeType != tc.mime || got.Info.Size != len(tc.file) {
				t.Fatalf("file info %+v, want %s of %d bytes", got.Info, tc.mime, len(tc.file))
			}
			if tc.msgType == event.MsgImage && (got.Info.Width != 3 || got.Info.Height != 2) {
				t.Errorf("image size %dx%d, want 3x2", got.Info.Width, got.Info.Height)
			}
			uri, err := got.URL.Parse()
			if err != nil {
				t.Fatalf("file URL %q: %v", got.URL, err)
			}
			data, err := bob.DownloadBytes(t.Context(), uri)
			if err != nil || !bytes.Equal(data, tc.file) {
				t.Errorf("download: %v, %q", err, data)
			}
		})
	}
}

// TestSendJSONAndKey sends with an idempotency key twice: one event, the same answer both times.
func TestSendJSONAndKey(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)

	var first, second sendResult
	for _, res := range []*sendResult{&first, &second} {
		out := mustSamtal(t, "send", "--json", "--key", "case-4711/update-1", string(room), "Case 4711: approved")
		if err := json.Unmarshal([]byte(out), res); err != nil {
			t.Fatalf("--json printed %q: %v", out, err)
		}
	}
	if first.ID == 0 || first.RoomID != room || !strings.HasPrefix(string(first.EventID), "$") || first.Duplicate {
		t.Errorf("first send: %+v", first)
	}
	if second.EventID != first.EventID || second.ID != first.ID || !second.Duplicate {
		t.Errorf("second send: %+v, first %+v", second, first)
	}
	waitEventID(t, bob, room, first.EventID)
	got := bodies(t, bob, room)
	if n := len(slices.DeleteFunc(got, func(b string) bool { return b != "Case 4711: approved" })); n != 1 {
		t.Errorf("the message arrived %d times", n)
	}
}

// TestSendNoWait queues a message without waiting; the next command on the session sends it.
func TestSendNoWait(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)

	out := mustSamtal(t, "send", "--no-wait", string(room), "queued")
	if !regexp.MustCompile(`^\d+$`).MatchString(out) {
		t.Errorf("--no-wait printed %q, want the outbox ID", out)
	}
	mustSamtal(t, "send", string(room), "after")
	matrixtest.WaitMessage(t, bob, room, "after")
	got := bodies(t, bob, room)
	if !slices.Equal(got, []string{"queued", "after"}) {
		t.Errorf("bob read %q, want queued then after, once each", got)
	}
}

// TestSendEncryptedRoom: rooms are encrypted by default and samtal encrypts into them; a
// member's encrypting client reads the message, the server holds only ciphertext. With
// --no-e2ee the room is refused, never sent plaintext.
func TestSendEncryptedRoom(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.NewClient(t, "bob", matrixtest.Encrypted())
	room := mustSamtal(t, "room", "create", "--invite", string(bob.UserID()))
	if _, err := bob.Join(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, bob, id.RoomID(room))
	mustSamtal(t, "send", room, "secret decision")
	got := inbox.WaitText(t, "secret decision")
	if !got.Mautrix.WasEncrypted {
		t.Error("the message was not encrypted")
	}
	r := samtal(t, nil, "send", "--no-e2ee", room, "never in plaintext")
	if r.code != exitFail || !strings.Contains(r.stderr, "--no-e2ee") {
		t.Errorf("--no-e2ee into an encrypted room: exit %d, stderr %q", r.code, r.stderr)
	}
}
