package mailbridge

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

// corpus is the mails of testdata, the fuzzers' seeds.
func corpus(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	var mails [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		mails = append(mails, b)
	}
	return mails
}

// FuzzConvert: no mail, however broken, makes the converter panic, and what it makes is always
// a valid message with a plaintext body free of NUL and other control characters.
func FuzzConvert(f *testing.F) {
	for _, b := range corpus(f) {
		f.Add(b)
	}
	f.Add([]byte("Authentication-Results: mx.test; dmarc=pass\r\nContent-Type: multipart/related; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:x\"><img src=\"mxc://cid.invalid/inline-0\"><img src=\"mxc://evil.example/a\">\r\n--b\r\nContent-Type: image/png\r\nContent-ID: <x>\r\n\r\nPNG\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\nDTSTART:20260101T000000Z\r\nEND:VEVENT\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := ParseWith(bytes.NewReader(raw), ParseOptions{AuthServID: "mx.test"})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse: %v", err)
			}
			return // an unreadable header: refused at DATA
		}
		// Images only from the mail's own parts, shown from an upload or named in words.
		uploaded := map[int]string{}
		for i, a := range m.Attachments {
			if a.Inline {
				uploaded[i] = "mxc://hs.example/up" + strconv.Itoa(i)
			}
			if a.Name != SafeFileName(a.Name) {
				t.Fatalf("unsafe attachment name %q", a.Name)
			}
		}
		for _, msg := range []matrix.Message{m.Message(), m.render(uploaded)} {
			c := msg.Content.(*event.MessageEventContent)
			for _, img := range imgTagRe.FindAllString(c.FormattedBody, -1) {
				if !strings.Contains(img, `src="mxc://hs.example/up`) {
					t.Fatalf("image not from the mail's own parts: %s", img)
				}
			}
			if m.DMARC != "pass" && strings.Contains(c.Body, "is verified") {
				t.Fatalf("shown as verified without a DMARC pass: %q", c.Body)
			}
		}
		msg := m.Message()
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
		if !strings.HasPrefix(c.Body, "From: ") || !strings.Contains(c.Body, "\nSender check: ") {
			t.Fatalf("no header in body %q", c.Body)
		}
	})
}

// FuzzSplitAddress: the address parser either refuses an address or splits it into a
// non-empty lower-case local part and a domain without '@', which put together are the
// address as given (trimmed, lower-cased).
func FuzzSplitAddress(f *testing.F) {
	for _, s := range []string{"a@b.example", " Anna@Agency.Example ", "a@b@c", "@b", "a@", "\"q@x\"@y.example", "ä@ö.example", strings.Repeat("a", 330) + "@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		local, domain, ok := splitAddress(addr)
		if !ok {
			return
		}
		if local == "" || domain == "" || strings.Contains(domain, "@") || len(local)+len(domain)+1 > 320 {
			t.Fatalf("splitAddress(%q) = %q, %q", addr, local, domain)
		}
		if local+"@"+domain != strings.ToLower(strings.TrimSpace(addr)) {
			t.Fatalf("splitAddress(%q) = %q, %q: not the address", addr, local, domain)
		}
		// What the router does with it: a known route, or ErrUnknownRecipient, never a panic.
		if _, err := fuzzRouter.Match(addr); err != nil && !errors.Is(err, ErrUnknownRecipient) {
			t.Fatalf("Match(%q): %v", addr, err)
		}
	})
}

var fuzzRouter, _ = NewRouter(Route{Address: "case-{id}@cases.example.se", Room: "#case-{id}:hs.example"}, Route{Address: "postmaster@cases.example.se", Room: "!ops:hs.example"})

// FuzzMessageIDs: references read from any header value are clean, bracket-free and bounded.
func FuzzMessageIDs(f *testing.F) {
	for _, s := range []string{"<a@b>", "<a@b> <c@d>", "<<>>", "<a@b\x00>", "garbage <x@y> (comment <z@w>)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, id := range messageIDs(v) {
			if id == "" || len(id) > 250 || strings.ContainsAny(id, "<> \t\r\n\x00") || !utf8.ValidString(id) {
				t.Fatalf("messageIDs(%q) has %q", v, id)
			}
		}
	})
}

// FuzzSafeFileName: a name made safe has no path, no control or bidi character and is
// short, and making it safe again changes nothing.
func FuzzSafeFileName(f *testing.F) {
	for _, s := range []string{"../../etc/passwd", "a\x00b\u202egnp.exe", `C:\x\y.dll`, "...", " . a . "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		s := SafeFileName(name)
		if strings.ContainsAny(s, `/\`) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || isBidiControl(r) }) || len(s) > 255 || !utf8.ValidString(s) {
			t.Fatalf("SafeFileName(%q) = %q", name, s)
		}
		if SafeFileName(s) != s {
			t.Fatalf("SafeFileName not stable: %q -> %q -> %q", name, s, SafeFileName(s))
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
