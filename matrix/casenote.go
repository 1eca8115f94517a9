package matrix

import (
	"errors"
	"fmt"
	"html"
	"net/url"
	"strings"

	"maunium.net/go/mautrix/event"
)

// Severity is how urgently a case notification asks for attention. It is
// always written out as a word, never shown by colour alone, so that it
// reaches readers who cannot see colour and clients that do not render it.
type Severity int

// The severities. The zero value is SeverityInfo, so a notification that
// says nothing about urgency claims none.
const (
	SeverityInfo Severity = iota
	SeverityWarning
	SeverityCritical
)

// String returns the word shown to readers ("Critical").
func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "Info"
	case SeverityWarning:
		return "Warning"
	case SeverityCritical:
		return "Critical"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Field is one labelled fact about a case, such as its status or handler.
type Field struct{ Name, Value string }

// CaseNotification is the message a case system posts when something
// happens to a case. It renders the same facts twice, as accessible HTML
// and as plaintext that reads well in any client, so the case system only
// states the facts.
type CaseNotification struct {
	CaseID   string   // e.g. "4711"; may be empty
	Title    string   // what happened; required
	Fields   []Field  // rendered in order
	Link     string   // the case in the case system; http(s) only
	Severity Severity // SeverityInfo unless set
}

// Message builds the notification as an m.notice, the msgtype for
// automated messages. It fails, wrapping ErrInvalidContent, when Title is
// empty or Link is set but is not an absolute http(s) URL: a javascript:
// or data: link must not reach a reader, and a notification that silently
// lost its link would mislead.
//
// Every string from the notification is HTML-escaped; the HTML uses only
// p, strong, ul, li, br and a, which every client can render.
func (n CaseNotification) Message() (Message, error) {
	title := oneLine(n.Title)
	if title == "" {
		return Message{}, fmt.Errorf("%w: case notification without title", ErrInvalidContent)
	}
	if n.Severity < SeverityInfo || n.Severity > SeverityCritical {
		return Message{}, fmt.Errorf("%w: case notification with unknown %s", ErrInvalidContent, n.Severity)
	}
	link, err := caseLink(n.Link)
	if err != nil {
		return Message{}, fmt.Errorf("%w: case notification link: %w", ErrInvalidContent, err)
	}
	caseID := oneLine(n.CaseID)
	headline := title
	if caseID != "" {
		headline = "Case " + caseID + ": " + title
	}

	var body, formatted strings.Builder
	formatted.WriteString("<p>")
	if n.Severity != SeverityInfo {
		fmt.Fprintf(&body, "[%s] ", n.Severity)
		fmt.Fprintf(&formatted, "<strong>%s:</strong> ", n.Severity)
	}
	body.WriteString(headline)
	formatted.WriteString(html.EscapeString(headline) + "</p>")

	var items []string
	for _, f := range n.Fields {
		name, value := oneLine(f.Name), strings.TrimSpace(strings.ReplaceAll(f.Value, "\r\n", "\n"))
		switch {
		case name == "" && value == "":
			continue
		case name == "":
			body.WriteString("\n" + value)
			items = append(items, multiline(value))
		default:
			body.WriteString("\n" + name + ": " + value)
			items = append(items, "<strong>"+html.EscapeString(name)+":</strong> "+multiline(value))
		}
	}
	if len(items) > 0 {
		formatted.WriteString("<ul><li>" + strings.Join(items, "</li><li>") + "</li></ul>")
	}

	if link != "" {
		// The body shows the URL itself so it can be copied; the HTML
		// names where it leads, which is what a screen reader should say.
		text := "Open case"
		if caseID != "" {
			text += " " + caseID
		}
		body.WriteString("\n" + link)
		fmt.Fprintf(&formatted, `<p><a href="%s">%s</a></p>`, html.EscapeString(link), html.EscapeString(text))
	}

	m := rich(event.MsgNotice, body.String(), formatted.String(), &event.Mentions{})
	if err := m.Validate(); err != nil {
		return Message{}, fmt.Errorf("case notification: %w", err)
	}
	return m, nil
}

// caseLink returns link as it should be sent, or an error when it is set
// but could lead anywhere other than a web page.
func caseLink(link string) (string, error) {
	link = strings.TrimSpace(link)
	if link == "" {
		return "", nil
	}
	u, err := url.Parse(link)
	if err != nil {
		return "", err
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	return u.String(), nil
}

// oneLine collapses runs of whitespace, including line breaks, into single
// spaces: a title or name spread over lines would break the layout.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// multiline escapes s for HTML and keeps its line breaks.
func multiline(s string) string {
	return strings.ReplaceAll(html.EscapeString(s), "\n", "<br>")
}
