package matrix

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
)

// MaxContentSize is how many bytes of JSON content an event may carry.
//
// The spec limits a whole event, as the server stores and signs it (a PDU),
// to 65536 bytes. Besides the content a PDU holds the room ID, sender and
// type (up to 255 bytes each), up to 20 prev_events and 10 auth_events
// (about 47 bytes each), hashes, signatures, depth and timestamps: under
// 3 KiB even at those maxima. Keeping 4 KiB for that envelope leaves 60 KiB
// for the content, with room to spare for fields the server adds.
//
// In encrypted rooms use MaxEncryptedContentSize instead.
const MaxContentSize = 60 * 1024

// MaxEncryptedContentSize is MaxContentSize for encrypted rooms. Megolm
// encrypts the content together with the event type and room ID and sends
// it base64-encoded, which makes it a third larger, plus a MAC and a
// signature: content of 44 KiB becomes about 59 KiB of ciphertext, which
// fits the same envelope.
const MaxEncryptedContentSize = 44 * 1024

// minFitLimit is the smallest limit FitWithin works with: it must leave
// room for a note saying that the message was shortened.
const minFitLimit = 1024

// Notes added to a message that Fit had to change, so the reader knows
// there is more in the attachment.
const (
	shortenedNote = "… (message shortened; the full text is attached)"
	plainNote     = "\n\n(formatting removed; the full message is attached)"
	tooLargeNote  = "(message too large to send; its content is attached)"
)

// Overflow MIME types: the charset is named because the text may be
// anything a case system or mail produced.
const (
	plainMIME = "text/plain; charset=utf-8"
	htmlMIME  = "text/html; charset=utf-8"
	jsonMIME  = "application/json"
)

// ContentSize returns the size of m's content encoded as JSON, the number
// that MaxContentSize limits.
func ContentSize(m Message) (int, error) {
	if m.Content == nil {
		return 0, fmt.Errorf("%w: nil content", ErrInvalidContent)
	}
	b, err := json.Marshal(m.Content)
	if err != nil {
		return 0, fmt.Errorf("matrix: encode %s content: %w", m.Type.Type, err)
	}
	return len(b), nil
}

// Fit returns m unchanged, with fits=true, when its JSON content fits
// MaxContentSize. Otherwise it returns a shortened message, the full text
// as overflow (text/html when m had HTML, else text/plain, both UTF-8) so
// that the caller can attach it as a file, and fits=false.
//
// The shortened message drops formatted_body and cuts body on a UTF-8
// boundary, ending it with a note that the full text is attached; for an
// edit both bodies are cut. If mentions alone are too large, only as many
// users as fit are kept. Content that cannot be cut this way (a huge file
// name, a reaction key) is replaced by an m.notice saying it was too large,
// with the whole content as JSON overflow. The result never exceeds the
// limit.
//
// If m's content cannot be encoded at all (nil content, say), Fit returns
// m unchanged with fits=false and no overflow; Validate says why.
func Fit(m Message) (fitted Message, overflow []byte, overflowMIME string, fits bool) {
	return FitWithin(m, MaxContentSize)
}

// FitWithin is Fit with another limit, such as MaxEncryptedContentSize.
// Limits below 1 KiB are raised to 1 KiB, to leave room for the note.
func FitWithin(m Message, limit int) (fitted Message, overflow []byte, overflowMIME string, fits bool) {
	limit = max(limit, minFitLimit)
	size, err := ContentSize(m)
	if err != nil {
		return m, nil, "", false
	}
	if size <= limit {
		return m, nil, "", true
	}
	if c, ok := m.Content.(*event.MessageEventContent); ok && c != nil {
		if short := shorten(c, limit); short != nil {
			overflow, mime := fullText(c)
			return Message{Type: m.Type, Content: short}, overflow, mime, false
		}
	}
	whole, _ := json.Marshal(m.Content) // ContentSize has encoded it once
	return tooLarge(m, limit), whole, jsonMIME, false
}

// shorten returns c cut down to limit, or nil when cutting the body and
// mentions is not enough.
func shorten(c *event.MessageEventContent, limit int) *event.MessageEventContent {
	fits := func(c *event.MessageEventContent) bool {
		b, err := json.Marshal(c)
		return err == nil && len(b) <= limit
	}
	parts := func(c *event.MessageEventContent) []*event.MessageEventContent {
		return []*event.MessageEventContent{c, c.NewContent}
	}
	longestBody, allMentions := 0, 0
	for _, p := range parts(c) {
		if p != nil {
			longestBody = max(longestBody, len(p.Body))
			if p.Mentions != nil {
				allMentions = max(allMentions, len(p.Mentions.UserIDs))
			}
		}
	}
	// build keeps at most bodyLen bytes of each body and mentions users.
	build := func(bodyLen, mentions int) *event.MessageEventContent {
		short := cloneContent(c)
		for _, p := range parts(short) {
			if p == nil {
				continue
			}
			switch {
			case bodyLen < len(p.Body):
				p.Body = cutUTF8(p.Body, bodyLen) + shortenedNote
			case p.FormattedBody != "":
				p.Body += plainNote
			}
			p.Format, p.FormattedBody = "", ""
			if p.Mentions != nil && len(p.Mentions.UserIDs) > mentions {
				p.Mentions.UserIDs = p.Mentions.UserIDs[:mentions]
			}
		}
		return short
	}

	// Who is notified matters more than the whole text, but a message
	// that is all mentions says nothing: mentions are cut only as far as
	// needed to keep the first few KiB of the body.
	mentions := allMentions
	reserve := min(longestBody, reservedBody)
	if !fits(build(reserve, mentions)) {
		switch {
		case fits(build(reserve, 0)):
			mentions = largest(0, allMentions, func(n int) bool { return fits(build(reserve, n)) })
		case fits(build(0, 0)):
			mentions = 0
		default:
			return nil
		}
	}
	if full := build(longestBody, mentions); fits(full) {
		return full
	}
	// A body longer than the limit cannot fit, whatever its encoding.
	upper := min(longestBody, limit+utf8.UTFMax)
	bodyLen := largest(0, upper, func(n int) bool { return fits(build(n, mentions)) })
	if short := build(bodyLen, mentions); fits(short) {
		return short
	}
	// Only reachable if the note is longer than what it replaces and the
	// message is right at the limit; the caller then sends a stand-in.
	return nil
}

// reservedBody is how much body Fit keeps before it cuts mentions.
const reservedBody = 4 * 1024

// largest returns the largest n in [lo, hi) for which ok holds, given that
// ok(lo) holds, ok(hi) does not, and ok holds for a prefix of the range.
func largest(lo, hi int, ok func(int) bool) int {
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// cutUTF8 returns at most n bytes of s, never splitting a character.
func cutUTF8(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// fullText returns the text a shortened message lost, in the richest form
// it had. For an edit that is the new content.
func fullText(c *event.MessageEventContent) ([]byte, string) {
	if c.NewContent != nil {
		c = c.NewContent
	}
	if c.Format == event.FormatHTML && c.FormattedBody != "" {
		return []byte(c.FormattedBody), htmlMIME
	}
	return []byte(c.Body), plainMIME
}

// tooLarge stands in for content that cannot be shortened. It stays in
// the same thread or reply chain when that still fits, so readers find it
// where the original would have been.
func tooLarge(m Message, limit int) Message {
	note := &event.MessageEventContent{MsgType: event.MsgNotice, Body: tooLargeNote, Mentions: &event.Mentions{}}
	if c, ok := m.Content.(*event.MessageEventContent); ok && c != nil && c.RelatesTo.GetReplaceID() == "" {
		note.RelatesTo = c.RelatesTo.Copy()
	}
	out := Message{Type: event.EventMessage, Content: note}
	if size, err := ContentSize(out); err != nil || size > limit {
		note.RelatesTo = nil
	}
	return out
}
