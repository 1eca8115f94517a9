package mailbridge_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestAttachmentOverUploadLimit: an attachment larger than the homeserver's m.upload.size is
// named in the message as not attached; the others arrive as files.
func TestAttachmentOverUploadLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	s := newScene(t, mailbridge.Options{}, matrixtest.WithMaxUpload(4096))
	inbox := s.inbox
	big := base64.StdEncoding.EncodeToString(make([]byte, 8192))
	raw := "From: a@b.example\r\nSubject: Two files\r\nMessage-ID: <two-files@b.example>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nTwo files.\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" + big + "\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=small.txt\r\n\r\nsmall\r\n--b--\r\n"
	if err := send(dial(t, s.addr), "a@b.example", []string{"cases@agency.example"}, raw); err != nil {
		t.Fatal(err)
	}
	got := inbox.Wait(t, subjectLine("Two files"))
	if !strings.Contains(got.Text(), "Not attached, larger than the homeserver accepts (kept in the gateway's spool): big.bin (8192 bytes)") ||
		!strings.Contains(got.Text(), "Attachments: small.txt") {
		t.Errorf("body %q", got.Text())
	}
	inbox.Wait(t, func(e *matrix.Event) bool { return message(e).Body == "small.txt" })
	// Posted in order: a marker after the files means big.bin would be there by now.
	if err := send(dial(t, s.addr), "a@b.example", []string{"cases@agency.example"}, mail("a@b.example", "Marker", "marker@b.example", "x")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Marker"))
	if n := count(inbox, func(e *matrix.Event) bool { return message(e).Body == "big.bin" }); n != 0 {
		t.Errorf("big.bin posted %d times", n)
	}
}
