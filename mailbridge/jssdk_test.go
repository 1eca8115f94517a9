package mailbridge_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/jspeer"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestMailReadWithJSSDK: in an encrypted room, a matrix-js-sdk reader (Element's SDK, with its
// own crypto) reads mail as a user would: the message with its header, HTML and the inline
// image's place, the image and the attachment as files it decrypts itself, and a reply sent
// with swaks in the thread of the first mail, its attachment too.
func TestMailReadWithJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver and a js-sdk client")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot", matrixtest.Encrypted())
	jsUser, jsPassword := srv.RegisterUser(t, "element")
	room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.PrivateChat, Invite: []id.UserID{jsUser}})
	if err != nil {
		t.Fatal(err)
	}
	peer := jspeer.Start(t, srv.URL, "element", jsPassword, room, "PEER_NO_ECHO=1", "PEER_DOWNLOAD=1")
	// The bot shares its room key with the devices it knows when it first sends: the js
	// device must be on the server by then.
	peer.Expect(t, "ready", 2*time.Minute)

	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "secure@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router})
	raw, err := os.ReadFile(filepath.Join("testdata", "related.eml"))
	if err != nil {
		t.Fatal(err)
	}
	png := pngOf(t, raw)
	withFile := strings.Replace(string(raw), "--rel--", "--rel\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\nattached notes\r\n--rel--", 1)
	if err := send(dial(t, addr), "system@agency.example", []string{"secure@agency.example"}, withFile); err != nil {
		t.Fatal(err)
	}
	attachment := filepath.Join(t.TempDir(), "svar.txt")
	if err := os.WriteFile(attachment, []byte("the answer, attached"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := swaks(t, "--server", addr, "--from", "citizen@example.org", "--to", "secure@agency.example",
		"--header", "Subject: Re: With logo", "--header", "Message-Id: <js-reply@example.org>",
		"--header", "In-Reply-To: <related-1@agency.example>", "--header", "References: <related-1@agency.example>",
		"--body", "Thanks for the logo.", "--attach-type", "text/plain", "--attach-name", "svar.txt", "--attach", "@"+attachment)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}

	seen := map[string]jspeer.Line{}
	deadline := time.Now().Add(3 * time.Minute)
	for len(seen) < 5 && time.Now().Before(deadline) {
		l := peer.Expect(t, "decrypted", time.Until(deadline))
		if l.Sender != bot.UserID() || !l.Encrypted {
			t.Errorf("js-sdk got %s from %s (encrypted %v)", l.EventID, l.Sender, l.Encrypted)
		}
		switch {
		case strings.Contains(l.Body, "Subject: With logo\n"):
			seen["root"] = l
		case strings.Contains(l.Body, "Subject: Re: With logo\n"):
			seen["reply"] = l
		case l.Body == "logo.png", l.Body == "notes.txt", l.Body == "svar.txt":
			seen[l.Body] = l
		}
	}
	root, reply := seen["root"], seen["reply"]
	if root.EventID == "" || reply.EventID == "" {
		t.Fatalf("js-sdk read %d of 5 events: %+v", len(seen), seen)
	}
	if root.MsgType != "m.text" || !strings.Contains(root.FormattedBody, "<b>From:</b> Case System &lt;system@agency.example&gt;") ||
		!strings.Contains(root.FormattedBody, "[image logo.png: sent as a file below]") || root.Thread != "" {
		t.Errorf("the first mail as js-sdk shows it: %+v", root)
	}
	if reply.Thread != root.EventID || !strings.Contains(reply.Body, "Thanks for the logo.") {
		t.Errorf("the reply as js-sdk shows it: thread %q (want %s), body %q", reply.Thread, root.EventID, reply.Body)
	}
	for name, want := range map[string]struct {
		data    []byte
		msgtype string
		thread  id.EventID
	}{
		"logo.png":  {png, "m.image", ""},
		"notes.txt": {[]byte("attached notes"), "m.file", ""},
		"svar.txt":  {[]byte("the answer, attached"), "m.file", root.EventID},
	} {
		l := seen[name]
		if l.FileError != "" || !bytes.Equal(bytes.TrimRight(l.File, "\r\n"), want.data) || l.MsgType != want.msgtype || l.Thread != want.thread {
			t.Errorf("%s as js-sdk shows it: %s, thread %q, %q (%s); want %s, thread %q, %q", name, l.MsgType, l.Thread, l.File, l.FileError, want.msgtype, want.thread, want.data)
		}
	}
}
