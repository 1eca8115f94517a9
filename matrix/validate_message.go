package matrix

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
)

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
