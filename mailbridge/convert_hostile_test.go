package mailbridge

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

// TestZipBombAttachment: a highly compressible attachment (a zip of zeros, 8 MiB decoded from
// base64) is passed on as the file it is, never unpacked: the message names it with its size
// and the text limit does not apply to files.
func TestZipBombAttachment(t *testing.T) {
	zeros := make([]byte, 8<<20)
	var b strings.Builder
	b.WriteString("From: a@b.example\r\nSubject: bomb\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\nsee file\r\n")
	b.WriteString("--z\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=\"42.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(zeros)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--z--\r\n")
	m, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Attachments) != 1 || m.Attachments[0].Size != 8<<20 || m.Attachments[0].Name != "42.zip" {
		t.Fatalf("attachments %+v", m.Attachments)
	}
	body := m.Message().Content.(*event.MessageEventContent).Body
	if !strings.Contains(body, "Attachments: 42.zip (8388608 bytes)") || !strings.Contains(body, "see file") {
		t.Errorf("body %q", body)
	}
}

// TestDeepForwarding: mail forwarded inside mail 1000 times is read to the depth limit and says
// so; it costs no more than the limit.
func TestDeepForwarding(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "From: level%d@b.example\r\nSubject: level %d\r\nContent-Type: message/rfc822\r\n\r\n", i, i)
	}
	b.WriteString("Subject: innermost\r\n\r\ninnermost text\r\n")
	m, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(m.Problems, "|"), "nested too deeply") {
		t.Errorf("problems %q", m.Problems)
	}
	if err := m.Message().Validate(); err != nil {
		t.Error(err)
	}
}

// TestInlineImageUploaded: where the Gateway uploaded an inline image, the HTML shows it from
// its mxc URI, and it is not listed as an attachment; other images stay dropped.
func TestInlineImageUploaded(t *testing.T) {
	m, err := Parse(bytes.NewReader(readMail(t, "related.eml")))
	if err != nil {
		t.Fatal(err)
	}
	c := m.render(map[int]string{0: "mxc://hs.example/logo123"}).Content.(*event.MessageEventContent)
	if !strings.Contains(c.FormattedBody, `<img src="mxc://hs.example/logo123" alt="logo">`) {
		t.Errorf("formatted_body %s", c.FormattedBody)
	}
	if strings.Count(c.FormattedBody, "<img") != 1 || strings.Contains(c.Body, "Attachments:") {
		t.Errorf("formatted_body %s\nbody %s", c.FormattedBody, c.Body)
	}
}

// TestTooLargeAttachmentNamed: an attachment over the upload limit is named in the message as
// not attached.
func TestTooLargeAttachmentNamed(t *testing.T) {
	m, err := Parse(bytes.NewReader(readMail(t, "mixed.eml")))
	if err != nil {
		t.Fatal(err)
	}
	m.Attachments[0].tooLarge = true
	body := m.Message().Content.(*event.MessageEventContent).Body
	if !strings.Contains(body, "Not attached, larger than the homeserver accepts (kept in the gateway's spool): evil.pdf (9 bytes)") || strings.Contains(body, "Attachments:") {
		t.Errorf("body %q", body)
	}
}

// TestLongMailFits: a mail whose text is over the event limit is shortened to fit an encrypted
// event, says so, and keeps its thread relation.
func TestLongMailFits(t *testing.T) {
	long := strings.Repeat("Lång rad i ett långt brev.\r\n", 10000)
	m, err := Parse(strings.NewReader("From: a@b.example\r\nSubject: long\r\n\r\n" + long))
	if err != nil {
		t.Fatal(err)
	}
	msg := matrix.InThread("$root", "$root", m.Message())
	fitted, shortened := fitMail(msg, true)
	if !shortened {
		t.Fatal("not shortened")
	}
	size, err := matrix.ContentSize(fitted)
	if err != nil || size > matrix.MaxEncryptedContentSize {
		t.Errorf("size %d, %v", size, err)
	}
	c := fitted.Content.(*event.MessageEventContent)
	if !strings.Contains(c.Body, "the original mail follows as mail.eml") || !strings.HasPrefix(c.Body, "From: a@b.example") {
		t.Errorf("body ends %q", c.Body[len(c.Body)-200:])
	}
	if c.RelatesTo == nil || c.RelatesTo.Type != event.RelThread || c.RelatesTo.EventID != "$root" {
		t.Errorf("relation %+v", c.RelatesTo)
	}
	if _, shortened := fitMail(matrix.Text("short"), true); shortened {
		t.Error("a short message was shortened")
	}
}

func TestTrimQuoted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Thanks.\n\nOn Mon, 30 Nov 2026, A <a@b> wrote:\n> old\n> older", "Thanks.\n\n[earlier mail quoted below this point is not shown]"},
		{"Tack.\n\nDen 30 nov. 2026 skrev A <a@b>:\n> gammalt", "Tack.\n\n[earlier mail quoted below this point is not shown]"},
		{"Ok.\n\n-----Original Message-----\nFrom: x\nSent: y\n\nold", "Ok.\n\n[earlier mail quoted below this point is not shown]"},
		{"Ok.\n\nFrom: Case System\nSent: Monday\nTo: me\nSubject: x\n\nold", "Ok.\n\n[earlier mail quoted below this point is not shown]"},
		{"> only a quote\n> nothing else", "> only a quote\n> nothing else"},                         // nothing would be left
		{"> inline quote\nmy answer\n> another\nmore", "> inline quote\nmy answer\n> another\nmore"}, // interleaved: kept
		{"Answer\n> quoted\n\n> rest", "Answer\n\n[earlier mail quoted below this point is not shown]"},
		{"From: the start of a line\nis not Outlook", "From: the start of a line\nis not Outlook"},
	} {
		if got, _ := trimQuoted(tc.in); got != tc.want {
			t.Errorf("trimQuoted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDMARCResult(t *testing.T) {
	for _, tc := range []struct{ header, want string }{
		{"", ""},
		{"Authentication-Results: mx.test; dmarc=pass header.from=a.example\r\n", "pass"},
		{"Authentication-Results: MX.TEST 1; dmarc=FAIL (p=reject) header.from=a.example\r\n", "fail"},
		{"Authentication-Results: mx.test; spf=pass smtp.mailfrom=a.example\r\n", "none"},
		{"Authentication-Results: mx.test; dmarc=none\r\n", "none"},
		{"Authentication-Results: mx.test; dmarc=bestguesspass\r\n", "unknown"},
		{"Authentication-Results: mx.test (comment; dmarc=pass); dmarc=temperror\r\n", "temperror"},
		{"Authentication-Results: other.example; dmarc=pass\r\n", ""},
		{"Authentication-Results: mx.test.evil; dmarc=pass\r\n", ""},
	} {
		m, err := ParseWith(strings.NewReader(tc.header+"From: a@a.example\r\nSubject: s\r\n\r\nx\r\n"), ParseOptions{AuthServID: "mx.test"})
		if err != nil {
			t.Fatal(err)
		}
		if m.DMARC != tc.want {
			t.Errorf("%q: DMARC = %q, want %q", tc.header, m.DMARC, tc.want)
		}
	}
	m, _ := Parse(strings.NewReader("Authentication-Results: mx.test; dmarc=pass\r\nSubject: s\r\n\r\nx"))
	if m.DMARC != "" {
		t.Errorf("without an authserv-id a header was believed: %q", m.DMARC)
	}
}
