package mailbridge

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decodes every charset the mail may name
	"github.com/emersion/go-message/mail"

	"github.com/samtalhq/samtal/matrix"
)

// Limits of the converter, so that hostile mail costs little to read.
const (
	maxHeaderBytes = 256 << 10 // the whole header block
	maxMIMEDepth   = 20        // multipart and message/rfc822 nesting
	maxMIMEParts   = 200       // parts in one mail
	maxTextBytes   = 2 << 20   // text read from all text parts together
)

// Mail is a received mail as the room sees it: who sent it, about what, and its text.
type Mail struct {
	MessageID   string       // without angle brackets; "" when the mail has none
	InReplyTo   []string     // Message-IDs of In-Reply-To, without angle brackets
	References  []string     // Message-IDs of References, oldest first
	FromName    string       // display name from the From header, decoded
	FromAddress string       // address from the From header
	Subject     string       // decoded; "" when the mail has none
	Text        string       // plaintext body, always set when the mail has any text
	HTML        string       // sanitized HTML body, "" when the mail has none
	Attachments []Attachment // parts that are files rather than text, inline images included
	// DMARC is the DMARC result ("pass", "fail", "none", "temperror", ...) of the top-most
	// Authentication-Results header written by this gateway (its authserv-id is
	// ParseOptions.AuthServID), or "" when there is none. Only "pass" is shown as verified.
	DMARC string
	// Auth is the whole verdict of that header (SPF, DKIM, an authenticated submitter), or nil.
	Auth *AuthResults
	// Automated says why the mail looks sent by a program rather than a person (Auto-Submitted
	// other than "no", Precedence bulk, list or junk, List-Id, a delivery status report), or
	// "" when nothing says so. Nothing must answer such mail automatically (RFC 3834).
	Automated string
	// Calendar has one line per event of a calendar invitation (text/calendar): what, when,
	// where, who invites.
	Calendar []string
	// Notes says what a reader should know about the mail that is not a fault: it was signed
	// or encrypted (PGP/MIME, S/MIME; signatures are never checked), it carries an Outlook
	// TNEF part.
	Notes []string
	// Problems says, in words a reader understands, what could not be read: an unknown
	// charset, a broken MIME structure. The text shown is best effort then.
	Problems []string
}

// Attachment describes a file part of a mail.
type Attachment struct {
	Name      string // file name, made safe (no path, no control or bidi characters); may be ""
	MimeType  string
	Size      int64  // decoded size in bytes
	Data      []byte // the decoded file
	ContentID string // Content-ID without angle brackets, "" when none
	// Inline is set for an image the HTML body shows (cid:). The Gateway uploads it and shows
	// it in place in rooms that are not encrypted; in encrypted rooms it is sent, encrypted,
	// as a file after the message, and the HTML says so where it was.
	Inline bool

	tooLarge bool // over the homeserver's upload limit: named in the message, not sent
}

// ParseOptions configure ParseWith.
type ParseOptions struct {
	// AuthServID is the authserv-id of the Authentication-Results header this gateway writes
	// (Options.Domain): only such a header is believed. "" believes none.
	AuthServID string
}

// Parse reads a mail (RFC 5322 with MIME) and returns it decoded, believing no
// Authentication-Results header; see ParseWith.
func Parse(r io.Reader) (*Mail, error) {
	return ParseWith(r, ParseOptions{})
}

// ParseWith reads a mail (RFC 5322 with MIME) and returns it decoded: RFC 2047 encoded words
// in the subject and names, RFC 2231 file names, any charset, quoted-printable and base64,
// multipart/alternative, related, mixed and signed, forwarded mail (message/rfc822) and
// calendar invitations. It is lenient: a broken body is read as far as it goes, text in a
// wrong or missing charset is decoded as Windows-1252 (the likeliest), and the trouble listed
// in Mail.Problems. Only a header that cannot be read at all is an error, wrapping
// ErrMalformed.
func ParseWith(r io.Reader, opts ParseOptions) (*Mail, error) {
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
	if opts.AuthServID != "" {
		if a, ok := ReadAuthResults(h.Header, opts.AuthServID); ok {
			m.Auth, m.DMARC = &a, a.DMARC
		}
	}
	p := &partReader{mail: m}
	b := p.walk(e, 0)
	text, htm := b.text, b.html
	text, _ = trimQuoted(strings.TrimSpace(text))
	if htm != "" {
		htm, _ = collapseQuotes(htm)
		m.HTML = p.inlineImages(htm)
	}
	m.Text = strings.TrimSpace(text)
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
	m.InReplyTo = messageIDs(h.Get("In-Reply-To"))
	m.References = messageIDs(h.Get("References"))
	if len(m.References) > maxReferences {
		m.References = m.References[len(m.References)-maxReferences:]
	}
	if s, err := h.Subject(); err == nil {
		m.Subject = m.headerText(s)
	} else {
		m.Subject = m.headerText(h.Get("Subject"))
		m.Problems = append(m.Problems, "the subject could not be fully decoded")
	}
	m.Automated = automated(h)
	if from, err := h.AddressList("From"); err == nil && len(from) > 0 {
		m.FromName, m.FromAddress = m.headerText(from[0].Name), m.headerText(from[0].Address)
	} else if raw := m.headerText(h.Get("From")); raw != "" {
		m.FromName = raw
	}
}

// headerText cleans a header value; 8-bit bytes that are not UTF-8 (a header written in a
// legacy charset without encoded words) are read as Windows-1252.
func (m *Mail) headerText(s string) string {
	if !utf8.ValidString(s) {
		var damaged bool
		if s, damaged = bestGuess(s); damaged {
			m.addProblem("a header has bytes that are not UTF-8; they are shown as \uFFFD (the replacement character)")
		} else {
			m.addProblem("a header uses 8-bit characters without naming their charset; shown as Windows-1252 (a best guess)")
		}
	}
	return clean(s, false)
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
	switch {
	case message.IsUnknownCharset(err):
		m.addProblem("a part uses an unknown charset and is shown as a best guess")
	case message.IsUnknownEncoding(err):
		m.addProblem("a part uses an unknown transfer encoding and is shown as it was sent")
	default:
		m.addProblem("part of the mail could not be read")
	}
}

func (m *Mail) addProblem(msg string) {
	for _, p := range m.Problems {
		if p == msg {
			return
		}
	}
	m.Problems = append(m.Problems, msg)
}

func (m *Mail) note(msg string) {
	for _, n := range m.Notes {
		if n == msg {
			return
		}
	}
	m.Notes = append(m.Notes, msg)
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
		p.mail.addProblem(fmt.Sprintf("the mail has more than %d parts; the rest is not shown", maxMIMEParts))
		return body{}
	}
	mediaType, params, err := e.Header.ContentType()
	if err != nil {
		mediaType, params = lenientMediaType(e.Header.Get("Content-Type"))
		if mediaType == "" {
			mediaType = "text/plain" // RFC 2045's default
		}
	}
	disp, dparams, err := e.Header.ContentDisposition()
	if err != nil {
		disp, dparams = lenientMediaType(e.Header.Get("Content-Disposition"))
	}
	if mr := e.MultipartReader(); mr != nil {
		if depth >= maxMIMEDepth {
			p.mail.addProblem("the mail is nested too deeply; the innermost parts are not shown")
			return body{}
		}
		return p.walkMultipart(mr, mediaType, params, depth)
	}
	name := fileName(e.Header, "Content-Disposition", "filename", dparams)
	if name == "" {
		name = fileName(e.Header, "Content-Type", "name", params)
	}
	switch {
	case mediaType == "message/rfc822" || mediaType == "message/global":
		if depth >= maxMIMEDepth {
			p.mail.addProblem("the mail is nested too deeply; the innermost parts are not shown")
			return body{}
		}
		return p.forwarded(e, depth)
	case mediaType == "text/calendar" || mediaType == "application/ics":
		data := p.readFile(e)
		p.mail.Calendar = append(p.mail.Calendar, calendarLines(data)...)
		if name == "" {
			name = "invitation.ics"
		}
		p.attach(name, mediaType, data, "")
		return body{}
	case mediaType == "application/pgp-signature":
		p.mail.note("it is signed with PGP; the signature is not checked here")
		_ = p.readFile(e)
		return body{}
	case mediaType == "application/pkcs7-signature" || mediaType == "application/x-pkcs7-signature":
		p.mail.note("it is signed with S/MIME; the signature is not checked here")
		_ = p.readFile(e)
		return body{}
	case mediaType == "application/pgp-encrypted":
		p.mail.note("it is encrypted with PGP; the encrypted part cannot be read here and is attached as it came")
		_ = p.readFile(e)
		return body{}
	case mediaType == "application/pkcs7-mime" || mediaType == "application/x-pkcs7-mime":
		if strings.EqualFold(params["smime-type"], "signed-data") {
			p.mail.note("it is signed with S/MIME in a form that hides its content; the signature is not checked and the signed part is attached as it came")
		} else {
			p.mail.note("it is encrypted with S/MIME; the encrypted part cannot be read here and is attached as it came")
		}
		if name == "" {
			name = "smime.p7m"
		}
	case mediaType == "application/ms-tnef" || mediaType == "application/vnd.ms-tnef" || strings.EqualFold(name, "winmail.dat"):
		p.mail.note("it has an Outlook TNEF part (winmail.dat), whose contents cannot be shown here; it is attached as it came")
	}
	textPart := mediaType == "text/plain" || mediaType == "text/html"
	if disp == "attachment" || !textPart {
		p.attach(name, mediaType, p.readFile(e), strings.Trim(clean(e.Header.Get("Content-Id"), false), "<> "))
		return body{}
	}
	text, err := p.read(e.Body, params["charset"])
	if err != nil {
		p.mail.problem(err)
	}
	if mediaType == "text/html" {
		return body{html: text}
	}
	return body{text: text}
}

func (p *partReader) attach(name, mediaType string, data []byte, contentID string) {
	p.mail.Attachments = append(p.mail.Attachments, Attachment{Name: SafeFileName(name), MimeType: clean(mediaType, false),
		Size: int64(len(data)), Data: data, ContentID: contentID})
}

func (p *partReader) readFile(e *message.Entity) []byte {
	data, err := io.ReadAll(e.Body)
	if err != nil {
		p.mail.problem(err)
	}
	return data
}

func (p *partReader) walkMultipart(mr message.MultipartReader, mediaType string, params map[string]string, depth int) body {
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
	switch mediaType {
	case "multipart/alternative":
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
	case "multipart/signed":
		// The first part is what was signed; the second the signature, noted by walk.
		if len(children) > 0 {
			return children[0]
		}
		return body{}
	}
	return joinBodies(children)
}

// forwarded renders a mail inside the mail (message/rfc822): a short header, then its body.
// Its attachments join the outer mail's.
func (p *partReader) forwarded(e *message.Entity, depth int) body {
	inner, err := message.ReadWithOptions(e.Body, &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if inner == nil {
		p.mail.addProblem("a forwarded mail in it could not be read")
		return body{}
	}
	if err != nil {
		p.mail.problem(err)
	}
	h := mail.Header{Header: inner.Header}
	from := p.mail.headerText(h.Get("From"))
	if list, err := h.AddressList("From"); err == nil && len(list) > 0 {
		from = formatAddress(p.mail.headerText(list[0].Name), p.mail.headerText(list[0].Address))
	}
	subject, err := h.Subject()
	if err != nil {
		subject = h.Get("Subject")
	}
	subject = p.mail.headerText(subject)
	date := p.mail.headerText(h.Get("Date"))
	head := "---------- Forwarded mail ----------\nFrom: " + from + "\nSubject: " + subject
	if date != "" {
		head += "\nDate: " + date
	}
	b := p.walk(inner, depth+1)
	out := body{text: head + "\n\n" + b.text}
	if b.html != "" {
		out.html = "<p><b>Forwarded mail</b><br><b>From:</b> " + html.EscapeString(from) + "<br><b>Subject:</b> " +
			html.EscapeString(subject) + "</p>" + b.html
		if b.text == "" {
			out.text = head + "\n\n" + htmlText(matrix.SanitizeHTML(b.html))
		}
	}
	return out
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

// read returns a text part, cleaned, within what is left of maxTextBytes. Text that is not
// valid UTF-8 although its charset says it is, or names none, is read as Windows-1252.
func (p *partReader) read(r io.Reader, declared string) (string, error) {
	left := maxTextBytes - p.textBytes
	if left <= 0 {
		p.mail.addProblem("the mail's text is too long; the rest is not shown")
		_, err := io.Copy(io.Discard, r)
		return "", err
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(left)+1))
	if n > int64(left) {
		p.mail.addProblem("the mail's text is too long; the rest is not shown")
		buf.Truncate(left)
		_, _ = io.Copy(io.Discard, r)
	}
	p.textBytes += buf.Len()
	s := buf.String()
	if !utf8.ValidString(s) {
		var damaged bool
		s, damaged = bestGuess(s)
		if damaged {
			p.mail.addProblem("a part has bytes that are not valid in its charset; they are shown as \uFFFD (the replacement character)")
		} else if declared == "" {
			p.mail.addProblem("a part names no charset and is not UTF-8; shown as Windows-1252 (a best guess)")
		} else {
			p.mail.addProblem("a part is not in the charset it names; shown as Windows-1252 (a best guess)")
		}
	}
	return clean(s, true), err
}

// Convert parses a raw mail and returns it as a Matrix message: Parse, then Mail.Message.
func Convert(r io.Reader) (matrix.Message, error) {
	m, err := Parse(r)
	if err != nil {
		return matrix.Message{}, err
	}
	return m.Message(), nil
}
