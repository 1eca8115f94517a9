package matrix

import (
	"errors"
	"fmt"
	"html"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/yuin/goldmark"
	nethtml "golang.org/x/net/html"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/format/mdext"
	"maunium.net/go/mautrix/id"
)

// Markdown renders md (CommonMark with tables, strikethrough and spoilers)
// into formatted_body and keeps md itself as body: Markdown source is the
// most readable plaintext a client without HTML can get.
//
// Raw HTML in md is shown as text, not interpreted; the rendered HTML still
// passes through SanitizeHTML, because Markdown links and images can carry
// any URL. Each user ID written as @user:server outside code and links
// becomes a mention pill and is listed in m.mentions, so those users are
// notified.
//
// Markdown that would render to more than 16 times its size plus 1 KiB of
// HTML (wide tables over many lines, one long link referenced many times)
// is sent as plain text instead, as is Markdown longer than MaxContentSize,
// whose formatting Fit would drop anyway.
func Markdown(md string) Message {
	budget := maxMarkdownGrowth*len(md) + 1024
	rendered, ok := renderMarkdown(md, budget)
	if !ok {
		return plain(event.MsgText, md)
	}
	formatted, users := mentionPills(rendered)
	formatted = SanitizeHTML(formatted)
	if len(formatted) > budget {
		return plain(event.MsgText, md)
	}
	mentions := &event.Mentions{}
	for _, u := range users {
		mentions.Add(u)
	}
	return rich(event.MsgText, md, formatted, mentions)
}

// maxMarkdownGrowth bounds how many bytes of HTML Markdown may produce per
// byte of source before Markdown gives up on formatting.
const maxMarkdownGrowth = 16

// markdownRenderer is the renderer format.RenderMarkdown uses for
// allowMarkdown=true, allowHTML=false. It is called directly so that the
// output can be capped while it is written: format.RenderMarkdown would
// first build all of it in memory.
var markdownRenderer = goldmark.New(format.Extensions, format.HTMLOptions, goldmark.WithExtensions(mdext.EscapeHTML))

// renderMarkdown renders md to HTML of at most budget bytes, or reports
// that it cannot.
func renderMarkdown(md string, budget int) (string, bool) {
	// GFM pads every table row to the header's width, so the work grows
	// with rows times columns; each cell is at least "<td></td>\n".
	if len(md) > MaxContentSize || tableCells(md)*len("<td></td>\n") > budget {
		return "", false
	}
	out := &cappedBuffer{limit: budget}
	if err := markdownRenderer.Convert([]byte(md), out); err != nil {
		return "", false
	}
	return format.UnwrapSingleParagraph(out.String()), true
}

// tableCells counts, generously, the cells of the Markdown tables in md:
// for each line that looks like a table's delimiter row, its columns times
// the lines up to the next blank line.
func tableCells(md string) int {
	cells, columns := 0, 0
	for line := range strings.Lines(md) {
		line = strings.TrimLeft(strings.TrimSpace(line), "> \t") // also in quotes
		switch {
		case line == "":
			columns = 0
		case columns > 0:
			cells += columns
		case strings.Contains(line, "-") && strings.Contains(line, "|") && strings.Trim(line, "|-: \t") == "":
			columns = strings.Count(line, "|") + 1
		}
	}
	return cells
}

// errTooLong stops rendering once the output is over its budget.
var errTooLong = errors.New("matrix: rendered output too long")

// cappedBuffer is a strings.Builder that refuses to grow past limit.
type cappedBuffer struct {
	strings.Builder
	limit int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.limit {
		return 0, errTooLong
	}
	return b.Builder.Write(p)
}

// userIDPattern finds user IDs in running text: the spec's localpart
// grammar and a server name with an optional port.
var userIDPattern = regexp.MustCompile(`@[a-z0-9._=/+-]+:(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?`)

// mentionPills links every user ID in the text of s (outside links and
// code) to its matrix.to URL, which clients show as a pill, and returns the
// users found.
func mentionPills(s string) (string, []id.UserID) {
	if !strings.Contains(s, "@") {
		return s, nil
	}
	var (
		out     strings.Builder
		users   []id.UserID
		inside  int // depth inside a, code and pre, where text is not prose
		z       = nethtml.NewTokenizer(strings.NewReader(s))
		skipped = map[string]bool{"a": true, "code": true, "pre": true}
	)
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			return out.String(), users
		}
		raw := string(z.Raw())
		tok := z.Token()
		switch {
		case tt == nethtml.StartTagToken && skipped[tok.Data]:
			inside++
		case tt == nethtml.EndTagToken && skipped[tok.Data] && inside > 0:
			inside--
		case tt == nethtml.TextToken && inside == 0:
			text, found := linkUserIDs(tok.Data)
			if len(found) > 0 {
				out.WriteString(text)
				users = append(users, found...)
				continue
			}
		}
		out.WriteString(raw)
	}
}

// linkUserIDs escapes text for HTML, turning each user ID into a pill.
func linkUserIDs(text string) (string, []id.UserID) {
	var (
		out   strings.Builder
		users []id.UserID
		last  int
	)
	for _, loc := range userIDPattern.FindAllStringIndex(text, -1) {
		start, end := loc[0], loc[1]
		if r, _ := utf8.DecodeLastRuneInString(text[:start]); start > 0 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._=/+-", r)) {
			continue // part of a longer word, like an email address
		}
		// Sentence punctuation after a server name is not part of it.
		for end > start && strings.ContainsRune(".-", rune(text[end-1])) {
			end--
		}
		user := id.UserID(text[start:end])
		if _, _, err := user.ParseAndValidateRelaxed(); err != nil {
			continue
		}
		out.WriteString(html.EscapeString(text[last:start]))
		fmt.Fprintf(&out, `<a href="%s">%s</a>`, html.EscapeString(user.URI().MatrixToURL()), html.EscapeString(string(user)))
		users = append(users, user)
		last = end
	}
	if users == nil {
		return "", nil
	}
	out.WriteString(html.EscapeString(text[last:]))
	return out.String(), users
}
