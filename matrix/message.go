package matrix

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"reflect"
	"regexp"
	"slices"
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

// ErrInvalidContent is wrapped by every error that says a Message must not
// be sent as it is, so callers can tell bad input from a failed send.
var ErrInvalidContent = errors.New("matrix: invalid content")

// Message is content ready to send into a room. It pairs the event type
// with its content because the two must agree, and keeping them together
// lets builders such as Reaction choose both.
//
// Builders and methods never modify the Message they are given: each
// returns a new one, so a Message can be kept as a template and reused.
type Message struct {
	Type    event.Type // event.EventMessage, event.EventReaction, event.EventSticker...
	Content any        // *event.MessageEventContent, *event.ReactionEventContent, ...
}

// Text is a plain m.text message. Like every builder here it carries an
// empty m.mentions, which tells clients not to guess mentions from the
// body: a bot that quotes a name must not ping that person by accident.
func Text(body string) Message {
	return plain(event.MsgText, body)
}

// Notice is an m.notice message, the msgtype the spec asks bots and other
// automated senders to use so that clients can style them and other bots
// do not answer them.
func Notice(body string) Message {
	return plain(event.MsgNotice, body)
}

// Emote is an m.emote message, shown as an action ("* bot waves").
func Emote(body string) Message {
	return plain(event.MsgEmote, body)
}

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

// HTML sends s as formatted_body after SanitizeHTML, with a plaintext body
// derived from the sanitized HTML for clients that do not render HTML.
//
// HTML never mentions anyone by itself, even when s contains mention pills:
// HTML often comes from outside (mail, case systems), and outsiders must
// not be able to notify users. Use Mentioning to notify.
func HTML(s string) Message {
	clean := SanitizeHTML(s)
	return rich(event.MsgText, format.HTMLToText(clean), clean, &event.Mentions{})
}

// AsNotice turns a text message (m.text, m.emote, including one inside an
// edit) into m.notice. Media and other content are returned unchanged,
// since changing their msgtype would lose what they are.
func (m Message) AsNotice() Message {
	return m.with(func(c *event.MessageEventContent) {
		for _, part := range []*event.MessageEventContent{c, c.NewContent} {
			if part != nil && part.MsgType.IsText() {
				part.MsgType = event.MsgNotice
			}
		}
	})
}

// Mentioning adds users to m.mentions, the intentional mentions of spec
// v1.7: only listed users are notified, whatever the body says. On an
// edit, the users are added both to the edit (they are notified now) and
// to its new content (they are part of the message from now on).
func (m Message) Mentioning(users ...id.UserID) Message {
	return m.with(func(c *event.MessageEventContent) {
		for _, part := range []*event.MessageEventContent{c, c.NewContent} {
			if part == nil {
				continue
			}
			if part.Mentions == nil {
				part.Mentions = &event.Mentions{}
			}
			for _, u := range users {
				part.Mentions.Add(u)
			}
		}
	})
}

// Reply makes m a reply to the event to. Its sender is mentioned, as the
// spec asks, so they learn of the answer. If to is in a thread, the reply
// stays in that thread (spec: replies within threads). No reply fallback
// is added to the body: spec v1.13 removed them.
//
// A nil or ID-less to leaves m unchanged. Any relation m had is replaced.
func Reply(to *event.Event, m Message) Message {
	if to == nil || to.ID == "" {
		return m
	}
	return m.with(func(c *event.MessageEventContent) {
		c.RelatesTo = &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: to.ID}}
		if root := threadRoot(to); root != "" {
			c.RelatesTo.Type = event.RelThread
			c.RelatesTo.EventID = root
		}
		if c.Mentions == nil {
			c.Mentions = &event.Mentions{}
		}
		c.Mentions.Add(to.Sender)
	})
}

// InThread places m in the thread started by root. latest is the newest
// event in the thread as the sender knows it: clients without thread
// support show m as a reply to it (is_falling_back). An empty latest falls
// back to root. Any relation m had is replaced.
func InThread(root id.EventID, latest id.EventID, m Message) Message {
	if latest == "" {
		latest = root
	}
	return m.with(func(c *event.MessageEventContent) {
		c.RelatesTo = &event.RelatesTo{
			Type:          event.RelThread,
			EventID:       root,
			InReplyTo:     &event.InReplyTo{EventID: latest},
			IsFallingBack: true,
		}
	})
}

// Edit makes m replace the earlier message target (m.replace). Clients
// that understand edits show m.new_content in place of the original;
// others show the fallback body, marked with "* " as the spec suggests.
//
// The edit itself mentions nobody, so that users mentioned in the original
// are not notified again; m's mentions stay in m.new_content. To notify
// users newly mentioned by the edit, call Mentioning on the result. The
// new content carries no relation: an edit cannot move a message.
func Edit(target id.EventID, m Message) Message {
	return m.with(func(c *event.MessageEventContent) {
		src := c
		if c.NewContent != nil {
			src = c.NewContent // editing an edit edits the same text
		}
		replacement := cloneContent(src)
		replacement.RelatesTo = nil
		replacement.NewContent = nil
		edit := event.MessageEventContent{
			MsgType:       src.MsgType,
			Body:          src.Body,
			Format:        src.Format,
			FormattedBody: src.FormattedBody,
			URL:           src.URL,
			File:          src.File,
			FileName:      src.FileName,
			Info:          src.Info,
			Mentions:      &event.Mentions{},
			NewContent:    replacement,
			RelatesTo:     &event.RelatesTo{Type: event.RelReplace, EventID: target},
		}
		if edit.MsgType.IsText() {
			edit.Body = "* " + edit.Body
			if edit.FormattedBody != "" {
				edit.FormattedBody = "* " + edit.FormattedBody
			}
		}
		*c = edit
	})
}

// Reaction annotates target with key, usually an emoji. The key is sent as
// given: clients group reactions by exact key, so it must not be altered.
func Reaction(target id.EventID, key string) Message {
	return Message{
		Type: event.EventReaction,
		Content: &event.ReactionEventContent{RelatesTo: event.RelatesTo{
			Type:    event.RelAnnotation,
			EventID: target,
			Key:     key,
		}},
	}
}

// MediaKind says how clients should present an uploaded file.
type MediaKind int

// The media kinds, one for each media msgtype. The zero value is FileKind,
// which every client can at least offer for download.
const (
	FileKind  MediaKind = iota // m.file
	ImageKind                  // m.image
	VideoKind                  // m.video
	AudioKind                  // m.audio
)

func (k MediaKind) msgType() event.MessageType {
	switch k {
	case FileKind:
		return event.MsgFile
	case ImageKind:
		return event.MsgImage
	case VideoKind:
		return event.MsgVideo
	case AudioKind:
		return event.MsgAudio
	}
	return "" // Validate reports it
}

// File announces media already uploaded to uri (an mxc:// URI) in an
// unencrypted room. name is shown to readers and used when saving; size is
// in bytes, so clients can warn before downloading a large file.
func File(kind MediaKind, uri id.ContentURIString, name, mimeType string, size int64) Message {
	m := media(kind, name, mimeType, size)
	m.Content.(*event.MessageEventContent).URL = uri
	return m
}

// EncryptedFile announces media uploaded encrypted, for encrypted rooms:
// file carries the mxc:// URI with the key and hashes needed to decrypt it.
func EncryptedFile(kind MediaKind, file *event.EncryptedFileInfo, name, mimeType string, size int64) Message {
	m := media(kind, name, mimeType, size)
	m.Content.(*event.MessageEventContent).File = file
	return m
}

// WithImageSize records the pixel size of an image or video, so clients
// can reserve space before it loads. Zero or negative values are left out;
// on other content WithImageSize does nothing.
func (m Message) WithImageSize(w, h int) Message {
	return m.with(func(c *event.MessageEventContent) {
		if !c.MsgType.IsMedia() {
			return
		}
		info := c.GetInfo()
		info.Width = max(w, 0)
		info.Height = max(h, 0)
	})
}

// Validate reports, wrapped in ErrInvalidContent, why m must not be sent:
// servers accept much that clients then fail to show, so the check is made
// before sending rather than left to the reader's client.
//
// It checks the event type (one mautrix knows as a room message event) and
// that the content is of the matching Go type; for messages a msgtype, a
// non-blank body, an mxc:// source for media, valid mention user IDs and
// valid UTF-8 in every text field; for reactions a target and a key. Size
// is checked by Fit, not here.
func (m Message) Validate() error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidContent, err)
	}
	return nil
}

func (m Message) validate() error {
	if m.Type.Type == "" {
		return errors.New("empty event type")
	}
	want, known := event.TypeMap[m.Type]
	if !known || m.Type.Class != event.MessageEventType {
		return fmt.Errorf("event type %q is not a known room message event", m.Type.Type)
	}
	if m.Content == nil || reflect.ValueOf(m.Content).Kind() == reflect.Pointer && reflect.ValueOf(m.Content).IsNil() {
		return errors.New("nil content")
	}
	if got := reflect.TypeOf(m.Content); got != want && got != reflect.PointerTo(want) {
		return fmt.Errorf("content of %s is %s, want *%s", m.Type.Type, got, want)
	}
	switch c := m.Content.(type) {
	case *event.MessageEventContent:
		return validateMessage(c, m.Type)
	case event.MessageEventContent:
		return validateMessage(&c, m.Type)
	case *event.ReactionEventContent:
		return validateReaction(&c.RelatesTo)
	case event.ReactionEventContent:
		return validateReaction(&c.RelatesTo)
	}
	return nil
}

func validateMessage(c *event.MessageEventContent, typ event.Type) error {
	if c.MsgType == "" && typ != event.EventSticker {
		return errors.New("empty msgtype")
	}
	if strings.TrimSpace(c.Body) == "" {
		return fmt.Errorf("%s with empty body", cmp.Or(string(c.MsgType), typ.Type))
	}
	for _, f := range [...]struct{ name, value string }{
		{"body", c.Body}, {"formatted_body", c.FormattedBody}, {"filename", c.FileName},
	} {
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	if c.FormattedBody != "" && c.Format != event.FormatHTML {
		return fmt.Errorf("formatted_body in unknown format %q", c.Format)
	}
	if c.MsgType.IsMedia() || typ == event.EventSticker {
		if err := validateSource(c); err != nil {
			return err
		}
	}
	if c.Mentions != nil {
		for _, u := range c.Mentions.UserIDs {
			if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
				return fmt.Errorf("mention of invalid user ID %q: %w", u, err)
			}
		}
	}
	if rel := c.RelatesTo; rel != nil {
		switch {
		case rel.Type != "" && rel.EventID == "":
			return fmt.Errorf("%s relation without an event", rel.Type)
		case rel.InReplyTo != nil && rel.InReplyTo.EventID == "":
			return errors.New("reply without an event to reply to")
		}
	}
	if c.NewContent != nil {
		if c.RelatesTo.GetReplaceID() == "" {
			return errors.New("m.new_content without an m.replace relation")
		}
		if err := validateMessage(c.NewContent, typ); err != nil {
			return fmt.Errorf("m.new_content: %w", err)
		}
	}
	return nil
}

func validateSource(c *event.MessageEventContent) error {
	uri := c.URL
	switch {
	case c.URL == "" && c.File == nil:
		return fmt.Errorf("%s without url or file", c.MsgType)
	case c.URL != "" && c.File != nil:
		return fmt.Errorf("%s with both url and file", c.MsgType)
	case c.File != nil:
		uri = c.File.URL
	}
	if _, err := uri.Parse(); err != nil {
		return fmt.Errorf("%s source %q: %w", c.MsgType, uri, err)
	}
	return nil
}

func validateReaction(rel *event.RelatesTo) error {
	switch {
	case rel.Type != event.RelAnnotation:
		return fmt.Errorf("reaction with relation %q, want %q", rel.Type, event.RelAnnotation)
	case rel.EventID == "":
		return errors.New("reaction without target event")
	case rel.Key == "":
		return errors.New("reaction with empty key")
	case !utf8.ValidString(rel.Key):
		return errors.New("reaction key is not valid UTF-8")
	}
	return nil
}

// with applies fn to a copy of m's message content, leaving m itself
// untouched. Content that is not a message passes through unchanged.
func (m Message) with(fn func(c *event.MessageEventContent)) Message {
	c, ok := m.Content.(*event.MessageEventContent)
	if !ok || c == nil {
		return m
	}
	c = cloneContent(c)
	fn(c)
	m.Content = c
	return m
}

// cloneContent copies c deeply enough that the builders' changes (to
// mentions, relations, info and new content) do not reach the original.
func cloneContent(c *event.MessageEventContent) *event.MessageEventContent {
	if c == nil {
		return nil
	}
	cp := *c
	if c.Mentions != nil {
		cp.Mentions = &event.Mentions{UserIDs: slices.Clone(c.Mentions.UserIDs), Room: c.Mentions.Room}
	}
	cp.RelatesTo = c.RelatesTo.Copy()
	if c.Info != nil {
		info := *c.Info
		cp.Info = &info
	}
	cp.NewContent = cloneContent(c.NewContent)
	return &cp
}

func plain(msgType event.MessageType, body string) Message {
	return Message{Type: event.EventMessage, Content: &event.MessageEventContent{
		MsgType:  msgType,
		Body:     body,
		Mentions: &event.Mentions{},
	}}
}

// rich is the one place that pairs a plaintext body with HTML. The HTML is
// left out when it says nothing the body does not: no tags, same text.
func rich(msgType event.MessageType, body, formatted string, mentions *event.Mentions) Message {
	m := plain(msgType, body)
	c := m.Content.(*event.MessageEventContent)
	c.Mentions = mentions
	if formatted != "" && (strings.ContainsRune(formatted, '<') || html.UnescapeString(formatted) != body) {
		c.Format = event.FormatHTML
		c.FormattedBody = formatted
	}
	return m
}

func media(kind MediaKind, name, mimeType string, size int64) Message {
	return Message{Type: event.EventMessage, Content: &event.MessageEventContent{
		MsgType:  kind.msgType(),
		Body:     name,
		FileName: name,
		Info:     &event.FileInfo{MimeType: mimeType, Size: int(max(size, 0))},
		Mentions: &event.Mentions{},
	}}
}

// threadRoot returns the root of the thread ev belongs to, or "" when it
// is in none. Events straight from sync may not be parsed yet, so the raw
// JSON is read as a fallback.
func threadRoot(ev *event.Event) id.EventID {
	if rel, ok := ev.Content.Parsed.(event.Relatable); ok {
		return rel.OptionalGetRelatesTo().GetThreadParent()
	}
	if len(ev.Content.VeryRaw) == 0 {
		return ""
	}
	var raw struct {
		RelatesTo *event.RelatesTo `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content.VeryRaw, &raw) != nil {
		return ""
	}
	return raw.RelatesTo.GetThreadParent()
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
