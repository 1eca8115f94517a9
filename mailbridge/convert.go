package mailbridge

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decodes every charset the mail may name
	"github.com/emersion/go-message/mail"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

// Limits of the converter, so that hostile mail costs little to read.
const (
	maxHeaderBytes = 256 << 10 // the whole header block
	maxMIMEDepth   = 20        // multipart nesting
	maxMIMEParts   = 200       // parts in one mail
	maxTextBytes   = 2 << 20   // text read from all text parts together
)

// Mail is a received mail as the room sees it: who sent it, about what, and its text.
type Mail struct {
	MessageID   string       // without angle brackets; "" when the mail has none
	FromName    string       // display name from the From header, decoded
	FromAddress string       // address from the From header
	Subject     string       // decoded; "" when the mail has none
	Text        string       // plaintext body, always set when the mail has any text
	HTML        string       // sanitized HTML body, "" when the mail has none
	Attachments []Attachment // parts that are files rather than text
	// Automated says why the mail looks sent by a program rather than a person (Auto-Submitted
	// other than "no", Precedence bulk, list or junk, List-Id, a delivery status report), or
	// "" when nothing says so. Nothing must answer such mail automatically (RFC 3834).
	Automated string
	// Problems says, in words a reader understands, what could not be read: an unknown
	// charset, a broken MIME structure. The text shown is best effort then.
	Problems []string
}

// Attachment describes a file part of a mail.
type Attachment struct {
	Name     string // file name, made safe (no path, no control or bidi characters); may be ""
	MimeType string
	Size     int64  // decoded size in bytes
	Data     []byte // the decoded file
}

// Parse reads a mail (RFC 5322 with MIME) and returns it decoded: RFC 2047 encoded words in
// the subject and names, any charset, quoted-printable and base64. It is lenient: a broken
// body is read as far as it goes and the trouble listed in Mail.Problems. Only a header that
// cannot be read at all is an error, wrapping ErrMalformed.
func Parse(r io.Reader) (*Mail, error) {
	e, err := message.ReadWithOptions(r, &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if e == nil {
		return nil, fmt.Errorf("mailbridge: read mail header: %v: %w", err, ErrMalformed)
	}
	m := &Mail{}
	if err != nil {
		m.problem(err)
	}
	h := mail.Header{Header: e.Header}
	m.readHeader(h)
	p := &partReader{mail: m}
	body := p.walk(e, 0)
	m.Text, m.HTML = body.text, body.html
	if m.HTML != "" {
		m.HTML = matrix.SanitizeHTML(m.HTML)
	}
	m.Text = strings.TrimSpace(m.Text)
	if m.Text == "" && m.HTML != "" {
		m.Text = strings.TrimSpace(htmlText(m.HTML))
	}
	return m, nil
}

func (m *Mail) readHeader(h mail.Header) {
	if id, err := h.MessageID(); err == nil {
		m.MessageID = clean(id, false)
	}
	if m.MessageID == "" {
		// A Message-ID that is not RFC 5322 still identifies the mail for deduplication.
		m.MessageID = strings.Trim(clean(h.Get("Message-Id"), false), "<> ")
	}
	if s, err := h.Subject(); err == nil {
		m.Subject = clean(s, false)
	} else {
		m.Subject = clean(h.Get("Subject"), false)
		m.Problems = append(m.Problems, "the subject could not be fully decoded")
	}
	m.Automated = automated(h)
	if from, err := h.AddressList("From"); err == nil && len(from) > 0 {
		m.FromName, m.FromAddress = clean(from[0].Name, false), clean(from[0].Address, false)
	} else if raw := clean(h.Get("From"), false); raw != "" {
		m.FromName = raw
	}
}

// automated returns why the header marks the mail as automated, or "".
func automated(h mail.Header) string {
	if v := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); v != "" && !strings.HasPrefix(v, "no") {
		return "Auto-Submitted: " + clean(v, false)
	}
	switch v := strings.ToLower(strings.TrimSpace(h.Get("Precedence"))); v {
	case "bulk", "list", "junk":
		return "Precedence: " + v
	}
	if h.Get("List-Id") != "" {
		return "List-Id"
	}
	if t, params, err := h.ContentType(); err == nil && t == "multipart/report" && strings.EqualFold(params["report-type"], "delivery-status") {
		return "delivery status report"
	}
	return ""
}

// problem records err in words; the error text of go-message names the charset or encoding,
// never content.
func (m *Mail) problem(err error) {
	var msg string
	switch {
	case message.IsUnknownCharset(err):
		msg = "a part uses an unknown charset and is shown as it was sent"
	case message.IsUnknownEncoding(err):
		msg = "a part uses an unknown transfer encoding and is shown as it was sent"
	default:
		msg = "part of the mail could not be read"
	}
	for _, p := range m.Problems {
		if p == msg {
			return
		}
	}
	m.Problems = append(m.Problems, msg)
}

// partReader walks the MIME tree of one mail, within the limits.
type partReader struct {
	mail      *Mail
	parts     int
	textBytes int
}

// body is the text found in a part and its children.
type body struct {
	text, html string
}

func (p *partReader) walk(e *message.Entity, depth int) body {
	p.parts++
	if p.parts > maxMIMEParts {
		p.note(fmt.Sprintf("the mail has more than %d parts; the rest is not shown", maxMIMEParts))
		return body{}
	}
	mediaType, params, err := e.Header.ContentType()
	if err != nil {
		mediaType = "text/plain" // RFC 2045's default
	}
	disp, dparams, _ := e.Header.ContentDisposition()
	if mr := e.MultipartReader(); mr != nil {
		if depth >= maxMIMEDepth {
			p.note("the mail is nested too deeply; the innermost parts are not shown")
			return body{}
		}
		return p.walkMultipart(mr, mediaType, depth)
	}
	if disp == "attachment" || (mediaType != "text/plain" && mediaType != "text/html") {
		name := dparams["filename"]
		if name == "" {
			name = params["name"]
		}
		data, err := io.ReadAll(e.Body)
		if err != nil {
			p.mail.problem(err)
		}
		p.mail.Attachments = append(p.mail.Attachments, Attachment{Name: SafeFileName(name), MimeType: clean(mediaType, false), Size: int64(len(data)), Data: data})
		return body{}
	}
	text, err := p.read(e.Body)
	if err != nil {
		p.mail.problem(err)
	}
	if mediaType == "text/html" {
		return body{html: text}
	}
	return body{text: text}
}

func (p *partReader) walkMultipart(mr message.MultipartReader, mediaType string, depth int) body {
	var children []body
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if part == nil {
				p.mail.problem(err)
				break
			}
			p.mail.problem(err) // unknown charset: part is still readable
		}
		children = append(children, p.walk(part, depth+1))
		if p.parts > maxMIMEParts {
			break
		}
	}
	if mediaType == "multipart/alternative" {
		// Parts are in order of increasing preference (RFC 2046): take the last of each kind.
		var b body
		for _, c := range children {
			if c.text != "" {
				b.text = c.text
			}
			if c.html != "" {
				b.html = c.html
			}
		}
		return b
	}
	return joinBodies(children)
}

// joinBodies puts the texts of a multipart/mixed (or related) one after the other. When any
// part has HTML, parts with only text join the HTML as preformatted text.
func joinBodies(parts []body) body {
	var text, htm []string
	anyHTML := false
	for _, c := range parts {
		anyHTML = anyHTML || c.html != ""
	}
	for _, c := range parts {
		if c.text == "" && c.html == "" {
			continue
		}
		t := c.text
		if t == "" {
			t = htmlText(matrix.SanitizeHTML(c.html))
		}
		text = append(text, strings.TrimSpace(t))
		if anyHTML {
			if c.html != "" {
				htm = append(htm, c.html)
			} else {
				htm = append(htm, "<pre>"+html.EscapeString(c.text)+"</pre>")
			}
		}
	}
	return body{text: strings.Join(text, "\n\n"), html: strings.Join(htm, "<hr>")}
}

// read returns a text part, cleaned, within what is left of maxTextBytes.
func (p *partReader) read(r io.Reader) (string, error) {
	left := maxTextBytes - p.textBytes
	if left <= 0 {
		p.note("the mail's text is too long; the rest is not shown")
		_, err := io.Copy(io.Discard, r)
		return "", err
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(left)+1))
	if n > int64(left) {
		p.note("the mail's text is too long; the rest is not shown")
		buf.Truncate(left)
		_, _ = io.Copy(io.Discard, r)
	}
	p.textBytes += buf.Len()
	return clean(buf.String(), true), err
}

func (p *partReader) note(msg string) {
	for _, m := range p.mail.Problems {
		if m == msg {
			return
		}
	}
	p.mail.Problems = append(p.mail.Problems, msg)
}

// Message returns the mail as a Matrix message: a compact header (sender and subject), the
// text, the names of its attachments (which the Gateway posts as files right after it), and
// what could not be shown. Mail with HTML becomes formatted_body (sanitized, remote
// images dropped) with the plaintext body beside it. matrix.Client.Send shortens it to the
// event size limit and attaches the full text when it is too long.
func (m *Mail) Message() matrix.Message {
	from := m.FromAddress
	if m.FromName != "" && m.FromAddress != "" {
		from = m.FromName + " <" + m.FromAddress + ">"
	} else if from == "" {
		from = m.FromName
	}
	if from == "" {
		from = "(unknown sender)"
	}
	subject := m.Subject
	if subject == "" {
		subject = "(no subject)"
	}
	text := m.Text
	if text == "" {
		text = "(this mail has no text)"
	}
	var notes []string
	if len(m.Attachments) > 0 {
		var names []string
		for _, a := range m.Attachments {
			n := a.Name
			if n == "" {
				n = "unnamed " + a.MimeType
			}
			names = append(names, fmt.Sprintf("%s (%d bytes)", n, a.Size))
		}
		notes = append(notes, "Attachments: "+strings.Join(names, ", "))
	}
	if m.Automated != "" {
		notes = append(notes, "Note: sent automatically ("+m.Automated+")")
	}
	for _, p := range m.Problems {
		notes = append(notes, "Note: "+p)
	}
	plain := "From: " + from + "\nSubject: " + subject + "\n\n" + text
	if len(notes) > 0 {
		plain += "\n\n" + strings.Join(notes, "\n")
	}
	if m.HTML == "" {
		return matrix.Text(plain)
	}
	var b strings.Builder
	b.WriteString("<p><b>From:</b> " + html.EscapeString(from) + "<br><b>Subject:</b> " + html.EscapeString(subject) + "</p>")
	b.WriteString(m.HTML)
	for _, n := range notes {
		b.WriteString("<p><i>" + html.EscapeString(n) + "</i></p>")
	}
	msg := matrix.HTML(b.String())
	if c, ok := msg.Content.(*event.MessageEventContent); ok {
		c.Body = plain
	}
	return msg
}

// Convert parses a raw mail and returns it as a Matrix message: Parse, then Mail.Message.
func Convert(r io.Reader) (matrix.Message, error) {
	m, err := Parse(r)
	if err != nil {
		return matrix.Message{}, err
	}
	return m.Message(), nil
}

// htmlText is the plaintext matrix.HTML derives from sanitized HTML.
func htmlText(sanitized string) string {
	if c, ok := matrix.HTML(sanitized).Content.(*event.MessageEventContent); ok {
		return c.Body
	}
	return ""
}

// clean makes text from a mail safe to show: valid UTF-8, line ends as \n, no NUL or other
// control characters (newlines and tabs kept where multiline), and no bidi overrides, which
// could make a subject or name read differently from what it is.
func clean(s string, multiline bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		switch {
		case multiline && (r == '\n' || r == '\t'):
			return r
		case !multiline && (r == '\n' || r == '\t'):
			return ' '
		case unicode.IsControl(r), isBidiControl(r):
			return -1
		}
		return r
	}, s)
}

func isBidiControl(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F || r == 0x061C
}

// SafeFileName returns name as a file name that is safe to show and to save: the last path
// element only, no control or bidi characters, at most 255 bytes. It returns "" for a name
// with nothing left.
func SafeFileName(name string) string {
	name = clean(name, false)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(strings.Trim(name, "."))
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}
