package mailbridge

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
)

// FuzzConvert: no mail, however broken, makes the converter panic, and what it makes is always
// a valid message with a plaintext body free of NUL and other control characters.
func FuzzConvert(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msg, err := Convert(bytes.NewReader(raw))
		if err != nil {
			return // an unreadable header: refused at DATA
		}
		if err := msg.Validate(); err != nil {
			t.Fatalf("invalid message: %v", err)
		}
		c := msg.Content.(*event.MessageEventContent)
		if !utf8.ValidString(c.Body) || !utf8.ValidString(c.FormattedBody) {
			t.Fatal("invalid UTF-8")
		}
		if strings.ContainsFunc(c.Body, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' }) {
			t.Fatalf("control character in body %q", c.Body)
		}
		if !strings.HasPrefix(c.Body, "From: ") {
			t.Fatalf("no header in body %q", c.Body)
		}
	})
}
