package mailbridge

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

// Inline images. The HTML of a mail refers to its inline images as cid:Content-ID. Before the
// HTML is sanitized, each such reference to an image part of the mail becomes a placeholder
// mxc URI (mxc://cid.invalid/inline-N, N the attachment's index), which the sanitizer keeps;
// after it, every other image is dropped, mxc:// ones of other servers included, since a
// client fetching them would tell that server that the mail was read. When the message is
// made for a room, a placeholder becomes the upload's real mxc URI, or a note that the image
// follows as a file.

const inlinePrefix = "mxc://cid.invalid/inline-"

var (
	cidSrcRe     = regexp.MustCompile(`(?i)(\ssrc\s*=\s*)(?:"cid:([^"]*)"|'cid:([^']*)'|cid:([^\s>"']+))`)
	imgTagRe     = regexp.MustCompile(`<img\b[^>]*>`)
	placeholdRe  = regexp.MustCompile(`\ssrc="` + regexp.QuoteMeta(inlinePrefix) + `(\d+)"`)
	imgAltRe     = regexp.MustCompile(`\salt="([^"]*)"`)
	quoteLineRe  = regexp.MustCompile(`(?i)^(on|den|am|le|el|op) .{1,300}(wrote|skrev|schrieb|a écrit|escribió|schreef)(\s.{0,200})?:\s*$`)
	origHeaderRe = regexp.MustCompile(`(?i)^-{2,}\s*(original message|ursprungligt meddelande|originalmeddelande|ursprüngliche nachricht)\s*-{2,}\s*$`)
	outlookFrom  = regexp.MustCompile(`(?i)^\*?(from|från|von):\*?\s`)
	outlookSent  = regexp.MustCompile(`(?i)^\*?(sent|skickat|gesendet|date|datum):\*?\s`)
)

// inlineImages turns cid: references to the mail's image parts into placeholders, sanitizes
// the HTML, and drops every image that is not one of them.
func (p *partReader) inlineImages(raw string) string {
	atts := p.mail.Attachments
	raw = cidSrcRe.ReplaceAllStringFunc(raw, func(s string) string {
		m := cidSrcRe.FindStringSubmatch(s)
		cid := m[2] + m[3] + m[4]
		if dec, err := url.PathUnescape(cid); err == nil {
			cid = dec
		}
		for i := range atts {
			if atts[i].ContentID != "" && atts[i].ContentID == cid && strings.HasPrefix(atts[i].MimeType, "image/") {
				atts[i].Inline = true
				return m[1] + `"` + inlinePrefix + strconv.Itoa(i) + `"`
			}
		}
		return m[1] + `""`
	})
	clean := matrix.SanitizeHTML(raw)
	return imgTagRe.ReplaceAllStringFunc(clean, func(tag string) string {
		m := placeholdRe.FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		if i, err := strconv.Atoi(m[1]); err != nil || i >= len(atts) || !atts[i].Inline {
			return ""
		}
		return tag
	})
}

// placeInlineImages makes the placeholders of html real: uploaded[i] is the mxc URI of
// attachment i, and an image without one is replaced by a note that it follows as a file.
func placeInlineImages(htm string, atts []Attachment, uploaded map[int]string) string {
	return imgTagRe.ReplaceAllStringFunc(htm, func(tag string) string {
		m := placeholdRe.FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		i, _ := strconv.Atoi(m[1])
		if uri, ok := uploaded[i]; ok {
			return strings.Replace(tag, m[0], ` src="`+html.EscapeString(uri)+`"`, 1)
		}
		name := ""
		if i < len(atts) {
			name = atts[i].Name
		}
		if name == "" {
			if a := imgAltRe.FindStringSubmatch(tag); a != nil {
				name = a[1] // already escaped by the sanitizer
			} else {
				name = "image"
			}
		} else {
			name = html.EscapeString(name)
		}
		if i < len(atts) && atts[i].tooLarge {
			return "<i>[image " + name + ": too large for the homeserver]</i>"
		}
		return "<i>[image " + name + ": sent as a file below]</i>"
	})
}

// collapseQuotes puts the quoted history of a reply (a blockquote type="cite", Gmail's and
// Thunderbird's quote blocks, Outlook's "From: ... Sent:" block and all after it) into a
// <details> element, so that clients show it folded. It reports whether it found any.
func collapseQuotes(raw string) (string, bool) {
	doc, err := html.Parse(strings.NewReader(raw))
	if err != nil {
		return raw, false
	}
	body := findBody(doc)
	if body == nil {
		return raw, false
	}
	q := findQuote(body)
	if q == nil {
		return raw, false
	}
	details := &html.Node{Type: html.ElementNode, Data: "details", DataAtom: atom.Details}
	summary := &html.Node{Type: html.ElementNode, Data: "summary", DataAtom: atom.Summary}
	summary.AppendChild(&html.Node{Type: html.TextNode, Data: "Earlier mail (quoted)"})
	details.AppendChild(summary)
	parent := q.Parent
	parent.InsertBefore(details, q)
	for n := q; n != nil; {
		next := n.NextSibling
		parent.RemoveChild(n)
		details.AppendChild(n)
		n = next
	}
	var b strings.Builder
	for c := body.FirstChild; c != nil; c = c.NextSibling {
		if err := html.Render(&b, c); err != nil {
			return raw, false
		}
	}
	return b.String(), true
}

func findBody(n *html.Node) *html.Node {
	if n.Type == html.ElementNode && n.DataAtom == atom.Body {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if b := findBody(c); b != nil {
			return b
		}
	}
	return nil
}

// findQuote returns the first node, in document order, that starts quoted history.
func findQuote(root *html.Node) *html.Node {
	var found *html.Node
	var visit func(n *html.Node, depth int)
	visit = func(n *html.Node, depth int) {
		if found != nil || depth > matrix.MaxHTMLDepth {
			return
		}
		if n.Type == html.ElementNode && isQuoteStart(n) {
			found = n
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			visit(c, depth+1)
		}
	}
	for c := root.FirstChild; c != nil; c = c.NextSibling {
		visit(c, 0)
	}
	return found
}

func isQuoteStart(n *html.Node) bool {
	attr := func(k string) string {
		for _, a := range n.Attr {
			if a.Key == k {
				return strings.ToLower(a.Val)
			}
		}
		return ""
	}
	class := " " + attr("class") + " "
	switch {
	case n.DataAtom == atom.Blockquote && attr("type") == "cite":
		return true
	case strings.Contains(class, " gmail_quote ") || strings.Contains(class, " moz-cite-prefix ") || strings.Contains(class, " yahoo_quoted "):
		return true
	case attr("id") == "divrplyfwdmsg" || attr("id") == "appendonsend":
		return true
	}
	return false
}

// trimQuoted cuts the quoted history off a plaintext reply: from a line such as "On ...
// wrote:", "-----Original Message-----" or Outlook's "From: ... / Sent: ..." block, or a
// block of "> " lines that runs to the end. It keeps the text when nothing would be left
// before the cut, and reports whether it cut.
func trimQuoted(text string) (string, bool) {
	lines := strings.Split(text, "\n")
	cut := -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case quoteLineRe.MatchString(t), origHeaderRe.MatchString(t):
			cut = i
		case outlookFrom.MatchString(t) && i > 0 && strings.TrimSpace(lines[i-1]) == "" || strings.HasPrefix(t, "____") && i+1 < len(lines) && outlookFrom.MatchString(strings.TrimSpace(lines[i+1])):
			for j := i + 1; j < len(lines) && j <= i+4; j++ {
				if outlookSent.MatchString(strings.TrimSpace(lines[j])) {
					cut = i
					break
				}
			}
		case strings.HasPrefix(t, ">") && restQuoted(lines[i:]):
			cut = i
		}
		if cut >= 0 {
			break
		}
	}
	if cut <= 0 {
		return text, false
	}
	kept := strings.TrimSpace(strings.Join(lines[:cut], "\n"))
	if kept == "" {
		return text, false
	}
	return kept + "\n\n[earlier mail quoted below this point is not shown]", true
}

// restQuoted reports whether every non-empty line is quoted.
func restQuoted(lines []string) bool {
	for _, l := range lines {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, ">") {
			return false
		}
	}
	return true
}

// htmlText is the plaintext matrix.HTML derives from sanitized HTML.
func htmlText(sanitized string) string {
	if c, ok := matrix.HTML(sanitized).Content.(*event.MessageEventContent); ok {
		return c.Body
	}
	return ""
}
