package mailbridge

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func readMail(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func content(t *testing.T, raw []byte) *event.MessageEventContent {
	t.Helper()
	m, err := ParseWith(bytes.NewReader(raw), ParseOptions{AuthServID: "mx.test"})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	msg := m.Message()
	if err := msg.Validate(); err != nil {
		t.Fatalf("Convert made an invalid message: %v", err)
	}
	return msg.Content.(*event.MessageEventContent)
}

// TestConvert: every mail of the corpus in testdata, well formed or hostile, becomes a valid
// message whose body and HTML say what a reader needs and carry nothing unsafe.
func TestConvert(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range []struct {
		file        string
		body        []string // each must be in body
		notBody     []string
		html        []string // each must be in formatted_body; nil means no HTML wanted
		notHTML     []string
		wantNoHTML  bool
		wantProblem string
	}{
		{
			file:       "plain.eml",
			body:       []string{"From: Anna Söderström <anna@agency.example>", "Subject: Ärende 4711", "beslut fattat i ärendet."},
			notBody:    []string{"\r"},
			wantNoHTML: true,
		},
		{
			file: "alternative.eml",
			// the plaintext part is the body (charset iso-8859-1 decoded), the HTML part formatted_body
			body: []string{"From: Case System <system@agency.example>", "Subject: Decision", "The decision is ä final."},
			html: []string{"<b>From:</b> Case System &lt;system@agency.example&gt;", "<b>final</b>"},
		},
		{
			file:    "hostile.eml",
			body:    []string{"From: mallory@evil.example", "Hi"},
			notBody: []string{"alert"},
			html:    []string{"Hi"},
			notHTML: []string{"script", "alert", "onerror", "onclick", "tracker.example", "javascript:"},
		},
		{
			// a bounce (DSN): its human-readable part is the body; the report is not lost
			file:    "dsn.eml",
			body:    []string{"Subject: Undelivered Mail Returned to Sender", "The mail could not be delivered."},
			notBody: []string{"\r"},
		},
		{
			file:       "mixed.eml",
			body:       []string{"See attached.", "Attachments: evil.pdf (9 bytes)"},
			notBody:    []string{"..", "/etc", "\u202e"},
			wantNoHTML: true,
		},
		{
			file:        "broken-boundary.eml",
			body:        []string{"Subject: broken"},
			wantNoHTML:  true,
			wantProblem: "could not be read",
		},
		{
			file:        "unknown-charset.eml",
			body:        []string{"Subject: bad nul", "nulhere[31m red"},
			notBody:     []string{"\x00", "\x07", "\x1b"},
			wantNoHTML:  true,
			wantProblem: "unknown charset",
		},
		{
			file: "related.eml",
			// Without uploads (an encrypted room) the inline image is named where it was and
			// follows as a file; remote images, foreign mxc images and unknown cids are gone.
			body:    []string{"Our logo:", "Attachments: logo.png (66 bytes)"},
			html:    []string{"Our logo: <i>[image logo.png: sent as a file below]</i>"},
			notHTML: []string{"tracker.example", "evil.example", "<img", "cid:"},
		},
		{
			file:       "forwarded.eml",
			body:       []string{"See below.", "---------- Forwarded mail ----------\nFrom: Björn <bjorn@citizen.example>\nSubject: Complaint about the road\nDate: Mon, 30 Nov 2026 09:00:00 +0100", "Vägen är trasig.", "Attachments: road.jpg (6 bytes)"},
			wantNoHTML: true,
		},
		{
			file:       "calendar.eml",
			body:       []string{"You are invited to the case review.", "Calendar: invitation: Case review, 4711, 2026-12-02 09:00 UTC to 2026-12-02 10:00 UTC, at Room 3, organized by boss@agency.example", "invitation.ics"},
			wantNoHTML: true,
		},
		{
			file:       "pgp-signed.eml",
			body:       []string{"This text is signed.", "signed with PGP; the signature is not checked", "Sender check: not checked (the sender is not verified)"},
			notBody:    []string{"BEGIN PGP SIGNATURE", "Attachments:", "domain is verified"},
			wantNoHTML: true,
		},
		{
			file:       "pgp-encrypted.eml",
			body:       []string{"(this mail has no text)", "encrypted with PGP", "Attachments: encrypted.asc"},
			notBody:    []string{"BEGIN PGP MESSAGE"},
			wantNoHTML: true,
		},
		{
			file:       "smime-signed.eml",
			body:       []string{"Signed by S/MIME.", "signed with S/MIME; the signature is not checked"},
			notBody:    []string{"Attachments:", "domain is verified"},
			wantNoHTML: true,
		},
		{
			file:       "smime-encrypted.eml",
			body:       []string{"encrypted with S/MIME", "Attachments: smime.p7m (21 bytes)"},
			wantNoHTML: true,
		},
		{
			file:       "tnef.eml",
			body:       []string{"Rich text was here.", "TNEF", "Attachments: winmail.dat (57 bytes)"},
			wantNoHTML: true,
		},
		{
			file:       "rfc2231.eml",
			body:       []string{"Attachments: ärende 4711.pdf (4 bytes), Beslut om åtgärd.pdf (4 bytes), Överklagan.pdf (4 bytes)"},
			wantNoHTML: true,
		},
		{
			file:        "wrong-charset.eml",
			body:        []string{"Räksmörgås utan rätt charset."},
			wantNoHTML:  true,
			wantProblem: "not in the charset it names; shown as Windows-1252",
		},
		{
			file:        "missing-charset.eml",
			body:        []string{"Köttbullar utan charset."},
			wantNoHTML:  true,
			wantProblem: "names no charset",
		},
		{
			file:        "8bit-header.eml",
			body:        []string{"From: Jörgen <jorgen@b.example>", "Subject: Ärende utan kodning", "Hej då."},
			wantNoHTML:  true,
			wantProblem: "8-bit characters without naming their charset",
		},
		{
			file:        "invalid-utf8.eml",
			body:        []string{"bad \uFFFD( bytes \uFFFD here, but ä is fine"},
			html:        []string{"bad \uFFFD( bytes"},
			wantProblem: "not valid in its charset",
		},
		{
			file:        "missing-boundary.eml",
			body:        []string{"Subject: no boundary", "(this mail has no text)"},
			wantNoHTML:  true,
			wantProblem: "could not be read",
		},
		{
			file:    "xss.eml",
			body:    []string{"Dear reader", "good link (https://agency.example/ok)"},
			notBody: []string{"alert", "evil.example"},
			html:    []string{`<a href="https://agency.example/ok">good link</a>`},
			notHTML: []string{"script", "alert", "onload", "onerror", "onclick", "javascript", "JaVaScRiPt", "vbscript", "data:", "evil.example", "<iframe", "<svg", "<form", "<input", "<meta", "<base", "<object", "<embed", "<style", "<link", "style=", "<img", "srcset"},
		},
		{
			file:       "hostile-names.eml",
			body:       []string{"Attachments: authorized_keys (1 bytes), invoice.pdf.exe (1 bytes), reportgpj.exe (1 bytes), evil.dll (1 bytes), unnamed application/octet-stream (1 bytes)"},
			notBody:    []string{"..", "../", "\\", "\u202e", "\x00", "ssh"},
			wantNoHTML: true,
		},
		{
			file:       "nul-bare-lf.eml",
			body:       []string{"Subject: nul and bare LF", "line one with nul\nline two\nline[2J three"},
			notBody:    []string{"\x00", "\x1b", "\x07", "\r"},
			wantNoHTML: true,
		},
		{
			file: "quoted-reply.eml",
			// The quoted history is cut from the body, folded in the HTML.
			body:    []string{"Thank you, that answers it.\n\n[earlier mail quoted below this point is not shown]"},
			notBody: []string{"decided", "wrote:"},
			html:    []string{"<div>Thank you, that answers it.</div><details><summary>Earlier mail (quoted)</summary>", "Your case 4711 is decided.</blockquote></div></details>"},
		},
		{
			file:       "auth-results.eml",
			body:       []string{"Sender check: DMARC pass (the sender's domain is verified)"},
			wantNoHTML: true,
		},
		{
			// Only the top-most header with our authserv-id counts: the other server's pass
			// above it and our name's pass below it are not believed.
			file:       "forged-auth.eml",
			body:       []string{"Sender check: DMARC fail (the sender may be forged)"},
			notBody:    []string{"domain is verified"},
			wantNoHTML: true,
		},
	} {
		covered[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			c := content(t, readMail(t, tc.file))
			for _, s := range tc.body {
				if !strings.Contains(c.Body, s) {
					t.Errorf("body lacks %q:\n%s", s, c.Body)
				}
			}
			for _, s := range tc.notBody {
				if strings.Contains(c.Body, s) {
					t.Errorf("body has %q:\n%s", s, c.Body)
				}
			}
			if tc.wantNoHTML && c.FormattedBody != "" {
				t.Errorf("formatted_body for a plain mail: %s", c.FormattedBody)
			}
			for _, s := range tc.html {
				if !strings.Contains(c.FormattedBody, s) {
					t.Errorf("formatted_body lacks %q:\n%s", s, c.FormattedBody)
				}
			}
			for _, s := range tc.notHTML {
				if strings.Contains(c.FormattedBody, s) {
					t.Errorf("formatted_body has %q:\n%s", s, c.FormattedBody)
				}
			}
			if tc.wantProblem != "" && !strings.Contains(c.Body, tc.wantProblem) {
				t.Errorf("body does not say %q:\n%s", tc.wantProblem, c.Body)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no case in TestConvert", f)
		}
	}
}

func TestParseMessageID(t *testing.T) {
	m, err := Parse(bytes.NewReader(readMail(t, "plain.eml")))
	if err != nil {
		t.Fatal(err)
	}
	if m.MessageID != "plain-1@agency.example" {
		t.Errorf("MessageID = %q", m.MessageID)
	}
	m, err = Parse(strings.NewReader("Subject: x\r\n\r\nno id\r\n"))
	if err != nil || m.MessageID != "" {
		t.Errorf("mail without Message-ID: %q, %v", m.MessageID, err)
	}
}

func TestParseMalformedHeader(t *testing.T) {
	for name, raw := range map[string]string{
		"header too large": "X-Long: " + strings.Repeat("a", maxHeaderBytes+1) + "\r\n\r\nbody",
		"no colon":         "this is not a header\r\n\r\nbody",
	} {
		if _, err := Parse(strings.NewReader(raw)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseLimits(t *testing.T) {
	var deep strings.Builder
	deep.WriteString("Subject: deep\r\n")
	for i := range 1000 {
		deep.WriteString("Content-Type: multipart/mixed; boundary=b" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "\r\n\r\n--b" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "\r\n")
	}
	deep.WriteString("Content-Type: text/plain\r\n\r\ninnermost\r\n")
	m, err := Parse(strings.NewReader(deep.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(m.Problems, "|"), "nested too deeply") {
		t.Errorf("1000 levels deep: problems %q", m.Problems)
	}

	var many strings.Builder
	many.WriteString("Subject: many\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n")
	for range 2000 {
		many.WriteString("--p\r\nContent-Type: text/plain\r\n\r\npart\r\n")
	}
	many.WriteString("--p--\r\n")
	m, err = Parse(strings.NewReader(many.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(m.Problems, "|"), "more than 200 parts") {
		t.Errorf("2000 parts: problems %q", m.Problems)
	}
}

func TestSafeFileName(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":             "report.pdf",
		"../../etc/passwd":       "passwd",
		`C:\Users\x\evil.exe`:    "evil.exe",
		"a\x00b\u202egnp.exe":    "abgnp.exe",
		"...":                    "",
		strings.Repeat("é", 200): strings.Repeat("é", 127),
	} {
		if got := SafeFileName(in); got != want {
			t.Errorf("SafeFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseAutomated(t *testing.T) {
	for _, tc := range []struct{ header, want string }{
		{"", ""},
		{"Auto-Submitted: no\r\n", ""},
		{"Auto-Submitted: auto-replied\r\n", "Auto-Submitted: auto-replied"},
		{"Auto-Submitted: Auto-Generated\r\n", "Auto-Submitted: auto-generated"},
		{"Precedence: bulk\r\n", "Precedence: bulk"},
		{"Precedence: LIST\r\n", "Precedence: list"},
		{"Precedence: first-class\r\n", ""},
		{"List-Id: <cases.agency.example>\r\n", "List-Id"},
		{"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n", "delivery status report"},
	} {
		m, err := Parse(strings.NewReader("From: a@b.example\r\nSubject: s\r\n" + tc.header + "\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if m.Automated != tc.want {
			t.Errorf("%q: Automated = %q, want %q", tc.header, m.Automated, tc.want)
		}
		if body := m.Message().Content.(*event.MessageEventContent).Body; (tc.want != "") != strings.Contains(body, "sent automatically") {
			t.Errorf("%q: body %q", tc.header, body)
		}
	}
}

func TestHeaderSize(t *testing.T) {
	for raw, want := range map[string]int{
		"":                          0,
		"\r\nbody":                  0,
		"A: b\r\n\r\nbody":          5,
		"A: b\n\nbody\r\n\r\n":      4,
		"A: b\r\nC: d":              10,
		"A: b\r\n\r\nX: \n\nsecond": 5,
	} {
		if got := headerSize([]byte(raw)); got != want {
			t.Errorf("headerSize(%q) = %d, want %d", raw, got, want)
		}
	}
}
