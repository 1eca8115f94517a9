package matrix

import (
	"encoding/json"
	"errors"
	"html"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
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
