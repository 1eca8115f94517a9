package mailbridge

import (
	"bytes"
	"errors"
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

// FuzzRouterMatch: any recipient either matches with a room that the capture cannot have
// turned into another server's alias or a room ID, or is refused with ErrUnknownRecipient.
func FuzzRouterMatch(f *testing.F) {
	r, err := NewRouter(
		Route{Address: "cases@agency.example", Room: "!cases:hs.example"},
		Route{Address: "case-{id}@cases.example.se", Room: "#case-{id}:hs.example"},
		Route{Address: "postmaster@cases.example.se", Room: "!ops:hs.example"},
	)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"cases@agency.example", "case-4711@cases.example.se", "case-a+b@cases.example.se", "postmaster@agency.example", "x@y", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rcpt string) {
		m, err := r.Match(rcpt)
		if err != nil {
			if !errors.Is(err, ErrUnknownRecipient) {
				t.Fatalf("Match(%q): %v", rcpt, err)
			}
			return
		}
		switch {
		case m.Room == "!cases:hs.example", m.Room == "!ops:hs.example":
		case strings.HasPrefix(m.Room, "#case-") && strings.HasSuffix(m.Room, ":hs.example"):
			id := strings.TrimSuffix(strings.TrimPrefix(m.Room, "#case-"), ":hs.example")
			if id == "" || strings.ContainsFunc(id, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-", r))
			}) {
				t.Fatalf("Match(%q) made room %q", rcpt, m.Room)
			}
		default:
			t.Fatalf("Match(%q) made room %q", rcpt, m.Room)
		}
	})
}
