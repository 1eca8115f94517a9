package mailbridge_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// reply is a mail answering inReplyTo, with References refs.
func reply(subject, messageID, inReplyTo string, refs []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Citizen <citizen@example.org>\r\nTo: cases@agency.example\r\nSubject: %s\r\nMessage-ID: <%s>\r\n", subject, messageID)
	if inReplyTo != "" {
		fmt.Fprintf(&b, "In-Reply-To: <%s>\r\n", inReplyTo)
	}
	if len(refs) > 0 {
		b.WriteString("References:")
		for _, r := range refs {
			b.WriteString(" <" + r + ">")
		}
		b.WriteString("\r\n")
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
	return b.String()
}

// threadOf returns the thread root an event is in, or "" for a main-timeline event.
func threadOf(e *matrix.Event) id.EventID {
	if rel := message(e).RelatesTo; rel != nil && rel.Type == event.RelThread {
		return rel.EventID
	}
	return ""
}

// TestMailThreads: a conversation by mail is one thread in the room, sent with go-smtp's client
// and with swaks, attachments of a reply included; a reply that arrives before the mail it
// answers starts the thread, and that mail joins it; Gateway.Thread tells what each mail
// became.
func TestMailThreads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver and sends mail into it")
	}
	sc := newScene(t, mailbridge.Options{})
	inbox := sc.inbox
	c := dial(t, sc.addr)

	if err := send(c, "system@agency.example", []string{"cases@agency.example"}, mail("system@agency.example", "Case 4711", "case-4711@agency.example", "Your case is opened.")); err != nil {
		t.Fatal(err)
	}
	first := inbox.Wait(t, subjectLine("Case 4711"))
	if threadOf(first) != "" {
		t.Fatalf("the first mail is in a thread: %+v", message(first).RelatesTo)
	}
	// Replies back to back: each waits for the root's event ID, none goes astray.
	if err := send(c, "citizen@example.org", []string{"cases@agency.example"}, reply("Re: Case 4711", "r1@example.org", "case-4711@agency.example", []string{"case-4711@agency.example"}, "A question.")); err != nil {
		t.Fatal(err)
	}
	out, err := swaks(t, "--server", sc.addr, "--from", "system@agency.example", "--to", "cases@agency.example",
		"--header", "Subject: Re: Re: Case 4711", "--header", "Message-Id: <r2@agency.example>",
		"--header", "In-Reply-To: <r1@example.org>", "--header", "References: <case-4711@agency.example> <r1@example.org>",
		"--body", "An answer, by swaks.")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	pdf := base64.StdEncoding.EncodeToString([]byte("%PDF-1.4 reply\n"))
	withFile := "From: citizen@example.org\r\nTo: cases@agency.example\r\nSubject: Re: Case 4711 with file\r\nMessage-ID: <r3@example.org>\r\n" +
		"In-Reply-To: <r2@agency.example>\r\nReferences: <case-4711@agency.example> <r1@example.org> <r2@agency.example>\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"svar.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + pdf + "\r\n--b--\r\n"
	if err := send(c, "citizen@example.org", []string{"cases@agency.example"}, withFile); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Re: Case 4711", "Re: Re: Case 4711", "Re: Case 4711 with file"} {
		if got := threadOf(inbox.Wait(t, subjectLine(s))); got != first.ID {
			t.Errorf("%q is in thread %q, want %s", s, got, first.ID)
		}
	}
	file := inbox.Wait(t, func(e *matrix.Event) bool {
		return message(e).MsgType == event.MsgFile && message(e).Body == "svar.pdf"
	})
	if threadOf(file) != first.ID {
		t.Errorf("the reply's attachment is in thread %q, want %s", threadOf(file), first.ID)
	}

	// Out of order: the answer arrives before the mail it answers.
	if err := send(c, "citizen@example.org", []string{"cases@agency.example"}, reply("Re: Late question", "late-answer@example.org", "late-q@agency.example", []string{"late-q@agency.example"}, "The answer came first.")); err != nil {
		t.Fatal(err)
	}
	answer := inbox.Wait(t, subjectLine("Re: Late question"))
	if threadOf(answer) != "" {
		t.Errorf("an answer to an unknown mail is in thread %q; it should start one", threadOf(answer))
	}
	if err := send(c, "system@agency.example", []string{"cases@agency.example"}, mail("system@agency.example", "Late question", "late-q@agency.example", "The question came second.")); err != nil {
		t.Fatal(err)
	}
	if got := threadOf(inbox.Wait(t, subjectLine("Late question"))); got != answer.ID {
		t.Errorf("the late mail is in thread %q, want the answer's %s", got, answer.ID)
	}

	// The mapping the outbound gateway reads.
	var e mailbridge.ThreadEntry
	matrixtest.Eventually(t, func() error {
		e, err = sc.g.Thread(t.Context(), sc.room, "<r2@agency.example>")
		if err == nil && e.Event == "" {
			err = errors.New("no event yet")
		}
		return err
	})
	if e.Root != first.ID || e.RootMessageID != "case-4711@agency.example" {
		t.Errorf("Thread(r2) = %+v, want root %s", e, first.ID)
	}
	if root, err := sc.g.Thread(t.Context(), sc.room, "case-4711@agency.example"); err != nil || root.Event != first.ID || root.Root != first.ID {
		t.Errorf("Thread(root) = %+v, %v", root, err)
	}
	if _, err := sc.g.Thread(t.Context(), sc.room, "nobody@example.org"); !errors.Is(err, mailbridge.ErrNoThread) {
		t.Errorf("Thread of an unknown mail: %v", err)
	}
}

// TestMailMedia: mail with text, HTML, an inline image and attachments arrives in a room that
// is not encrypted with the image shown in place from the homeserver, and in an encrypted room
// with everything encrypted: the message, the image and the attachment, each sent as an
// encrypted file.
func TestMailMedia(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver and sends mail into it")
	}
	stage := newEncryptedScene(t, mailbridge.Options{}, nil)
	officer, plainRoom, secureRoom, addr, inbox := stage.officer, stage.room, stage.secure, stage.addr, stage.inbox
	raw, err := os.ReadFile(filepath.Join("testdata", "related.eml"))
	if err != nil {
		t.Fatal(err)
	}
	png := pngOf(t, raw)
	withFile := strings.Replace(string(raw), "--rel--", "--rel\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\nattached notes\r\n--rel--", 1)
	// One mail to both rooms: posted once in each.
	if err := send(dial(t, addr), "system@agency.example", []string{"cases@agency.example", "secure@agency.example"}, withFile); err != nil {
		t.Fatal(err)
	}

	plain := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == plainRoom && subjectLine("With logo")(e) })
	pc := message(plain)
	src := ""
	if i := strings.Index(pc.FormattedBody, `<img src="mxc://`); i >= 0 {
		src = pc.FormattedBody[i+len(`<img src="`):]
		src = src[:strings.IndexByte(src, '"')]
	}
	if src == "" || strings.Contains(pc.FormattedBody, "tracker.example") || strings.Contains(pc.FormattedBody, "evil.example") {
		t.Fatalf("formatted_body %s", pc.FormattedBody)
	}
	img, err := officer.Download(t.Context(), &event.MessageEventContent{MsgType: event.MsgImage, URL: id.ContentURIString(src)}, 0)
	if err != nil || !bytes.Equal(img, png) {
		t.Errorf("inline image from %s: %d bytes, %v", src, len(img), err)
	}
	notes := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == plainRoom && message(e).Body == "notes.txt" })
	if message(notes).URL == "" {
		t.Errorf("attachment in the plain room: %+v", message(notes))
	}

	secure := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == secureRoom && subjectLine("With logo")(e) })
	sc := message(secure)
	if !secure.Mautrix.WasEncrypted || strings.Contains(sc.FormattedBody, "<img") || !strings.Contains(sc.FormattedBody, "[image logo.png: sent as a file below]") {
		t.Errorf("encrypted room message (encrypted %v): %s", secure.Mautrix.WasEncrypted, sc.FormattedBody)
	}
	for name, want := range map[string][]byte{"logo.png": png, "notes.txt": []byte("attached notes")} {
		f := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == secureRoom && message(e).Body == name })
		fc := message(f)
		if !f.Mautrix.WasEncrypted || fc.File == nil || fc.URL != "" {
			t.Errorf("%s in the encrypted room: encrypted event %v, encrypted file %v, plain url %q", name, f.Mautrix.WasEncrypted, fc.File != nil, fc.URL)
			continue
		}
		if name == "logo.png" && fc.MsgType != event.MsgImage {
			t.Errorf("inline image sent as %s", fc.MsgType)
		}
		if data, err := officer.Download(t.Context(), fc, 0); err != nil || !bytes.Equal(data, want) {
			t.Errorf("%s: %q, %v", name, data, err)
		}
	}
	if n := count(inbox, func(e *matrix.Event) bool { return subjectLine("With logo")(e) }); n != 2 {
		t.Errorf("posted %d times, want once per room", n)
	}

	// A mail over the event size limit: shortened, with the original following as mail.eml.
	long := mail("system@agency.example", "Very long", "long-1@agency.example", strings.Repeat("En mycket lång rad i ett brev.\r\n", 4000))
	if err := send(dial(t, addr), "system@agency.example", []string{"secure@agency.example"}, long); err != nil {
		t.Fatal(err)
	}
	short := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == secureRoom && subjectLine("Very long")(e) })
	if !strings.Contains(short.Text(), "the original mail follows as mail.eml") {
		t.Errorf("the long mail ends %q", short.Text()[max(0, len(short.Text())-200):])
	}
	eml := inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == secureRoom && message(e).Body == "mail.eml" })
	if data, err := officer.Download(t.Context(), message(eml), 0); err != nil || !bytes.Contains(data, []byte("Message-ID: <long-1@agency.example>")) || len(data) < len(long) {
		t.Errorf("mail.eml: %d bytes, %v", len(data), err)
	}
}

// pngOf returns the decoded image of related.eml.
func pngOf(t *testing.T, raw []byte) []byte {
	t.Helper()
	s := string(raw)
	i := strings.Index(s, "base64\r\n\r\n")
	if i < 0 {
		t.Fatal("no image in related.eml")
	}
	s = s[i+len("base64\r\n\r\n"):]
	s = s[:strings.Index(s, "\r\n")]
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
