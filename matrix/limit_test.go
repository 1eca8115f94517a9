package matrix

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// mustFit fails unless m's content is within limit, and returns the size.
func mustFit(t *testing.T, m Message, limit int) int {
	t.Helper()
	size, err := ContentSize(m)
	if err != nil {
		t.Fatalf("ContentSize: %v", err)
	}
	if size > limit {
		t.Fatalf("content is %d bytes, over the limit of %d", size, limit)
	}
	return size
}

func messageContent(t *testing.T, m Message) *event.MessageEventContent {
	t.Helper()
	c, ok := m.Content.(*event.MessageEventContent)
	if !ok {
		t.Fatalf("content is %T, want *event.MessageEventContent", m.Content)
	}
	return c
}

func TestFitLeavesSmallMessagesAlone(t *testing.T) {
	m := Markdown("**small** @anna:example.se")
	fitted, overflow, mime, fits := Fit(m)
	if !fits || overflow != nil || mime != "" {
		t.Errorf("Fit = fits %v, overflow %q, mime %q; want fits, nothing else", fits, overflow, mime)
	}
	if fitted.Content != m.Content {
		t.Errorf("Fit changed a message that fits")
	}
}

func TestFitShortensLongText(t *testing.T) {
	tests := []struct {
		name string
		unit string // repeated to 1 MiB
	}{
		{"two-byte characters", "å"},
		{"three-byte characters", "€"},
		{"four-byte characters", "🙂"},
		{"mixed", "aå€🙂 "},
		{"characters JSON escapes", "<>&\"\\\x01\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat(tt.unit, (1<<20)/len(tt.unit))
			fitted, overflow, mime, fits := Fit(Notice(body))
			if fits {
				t.Fatal("Fit says a 1 MiB body fits")
			}
			size := mustFit(t, fitted, MaxContentSize)
			if size < MaxContentSize-64 {
				t.Errorf("content is %d bytes; Fit should use the room up to %d", size, MaxContentSize)
			}
			c := messageContent(t, fitted)
			if !utf8.ValidString(c.Body) {
				t.Error("shortened body is not valid UTF-8")
			}
			kept, ok := strings.CutSuffix(c.Body, shortenedNote)
			if !ok || !strings.HasPrefix(body, kept) {
				t.Errorf("body is not a prefix of the original plus the note: ...%q", c.Body[max(0, len(c.Body)-80):])
			}
			if c.MsgType != event.MsgNotice {
				t.Errorf("msgtype = %s, want m.notice kept", c.MsgType)
			}
			if string(overflow) != body || mime != "text/plain; charset=utf-8" {
				t.Errorf("overflow is %d bytes of %q, want the %d-byte body as text/plain", len(overflow), mime, len(body))
			}
			if err := fitted.Validate(); err != nil {
				t.Errorf("fitted message invalid: %v", err)
			}
		})
	}
}

func TestFitHandsBackHTML(t *testing.T) {
	html := strings.Repeat("<p><b>Beslut</b> i ärendet</p>", 4000)
	m := HTML(html)
	fitted, overflow, mime, fits := Fit(m)
	if fits {
		t.Fatal("Fit says it fits")
	}
	mustFit(t, fitted, MaxContentSize)
	c := messageContent(t, fitted)
	if c.FormattedBody != "" || c.Format != "" {
		t.Errorf("formatted_body kept (%d bytes)", len(c.FormattedBody))
	}
	if string(overflow) != messageContent(t, m).FormattedBody || mime != "text/html; charset=utf-8" {
		t.Errorf("overflow is %d bytes of %q, want the HTML as text/html", len(overflow), mime)
	}
}

func TestFitKeepsAWholeBodyWhenOnlyTheHTMLIsTooLarge(t *testing.T) {
	// Plaintext of 40 KiB, HTML of more: dropping the HTML is enough.
	body := strings.Repeat("word ", 8*1024)
	m := rich(event.MsgText, body, "<p>"+strings.Repeat("<b>word</b> ", 8*1024)+"</p>", &event.Mentions{})
	fitted, _, mime, fits := Fit(m)
	if fits {
		t.Fatal("Fit says it fits")
	}
	mustFit(t, fitted, MaxContentSize)
	if got := messageContent(t, fitted).Body; got != body+plainNote {
		t.Errorf("body cut to %d bytes, want the whole body and a note", len(got))
	}
	if mime != "text/html; charset=utf-8" {
		t.Errorf("mime = %q", mime)
	}
}

func TestFitWithManyMentions(t *testing.T) {
	var users []id.UserID
	for i := range 5000 {
		users = append(users, id.UserID(fmt.Sprintf("@handler%04d:cases.example.se", i)))
	}
	tests := []struct {
		name string
		body string
	}{
		{"short body", "Meeting moved to 14:00"},
		{"long body", strings.Repeat("Protokoll från mötet. ", 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fitted, _, _, fits := Fit(Notice(tt.body).Mentioning(users...))
			if fits {
				t.Fatal("Fit says it fits")
			}
			mustFit(t, fitted, MaxContentSize)
			c := messageContent(t, fitted)
			n := len(c.Mentions.UserIDs)
			if n == 0 || n == len(users) {
				t.Errorf("kept %d of %d mentions, want as many as fit", n, len(users))
			}
			if c.Mentions.UserIDs[0] != users[0] {
				t.Errorf("mentions reordered")
			}
			if !strings.HasPrefix(tt.body, strings.TrimSuffix(c.Body, shortenedNote)) || len(c.Body) < min(len(tt.body), reservedBody) {
				t.Errorf("body cut to %d bytes, want at least %d", len(c.Body), min(len(tt.body), reservedBody))
			}
		})
	}
}

func TestFitShortensEdits(t *testing.T) {
	body := strings.Repeat("ändrad text ", 10000)
	fitted, overflow, _, fits := Fit(Edit("$orig", Markdown(body)))
	if fits {
		t.Fatal("Fit says it fits")
	}
	mustFit(t, fitted, MaxContentSize)
	c := messageContent(t, fitted)
	if c.RelatesTo.GetReplaceID() != "$orig" || c.NewContent == nil {
		t.Fatalf("edit relation lost: %+v", c.RelatesTo)
	}
	if !strings.HasPrefix(c.Body, "* ") || !strings.HasSuffix(c.NewContent.Body, shortenedNote) {
		t.Errorf("bodies not shortened as an edit: %q... / ...%q", c.Body[:20], c.NewContent.Body[len(c.NewContent.Body)-60:])
	}
	if string(overflow) != body {
		t.Errorf("overflow is not the new text")
	}
	if err := fitted.Validate(); err != nil {
		t.Errorf("fitted edit invalid: %v", err)
	}
}

func TestFitStandsInForWhatCannotBeCut(t *testing.T) {
	huge := strings.Repeat("x", 2*MaxContentSize)
	tests := []struct {
		name       string
		msg        Message
		wantThread id.EventID
	}{
		{"file name", InThread("$root", "", File(FileKind, "mxc://example.se/abc", huge, "text/plain", 1)), "$root"},
		{"reaction key", Reaction("$orig", huge), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fitted, overflow, mime, fits := Fit(tt.msg)
			if fits {
				t.Fatal("Fit says it fits")
			}
			mustFit(t, fitted, MaxContentSize)
			c := messageContent(t, fitted)
			if c.MsgType != event.MsgNotice || c.Body != tooLargeNote {
				t.Errorf("stand-in is %s %q", c.MsgType, c.Body)
			}
			if got := c.RelatesTo.GetThreadParent(); got != tt.wantThread {
				t.Errorf("thread = %q, want %q", got, tt.wantThread)
			}
			want, _ := json.Marshal(tt.msg.Content)
			if string(overflow) != string(want) || mime != "application/json" {
				t.Errorf("overflow is %d bytes of %q, want the content as JSON", len(overflow), mime)
			}
			if err := fitted.Validate(); err != nil {
				t.Errorf("stand-in invalid: %v", err)
			}
		})
	}
}

func TestFitWithinEncryptedLimit(t *testing.T) {
	fitted, _, _, fits := FitWithin(Text(strings.Repeat("ö", 30*1024)), MaxEncryptedContentSize)
	if fits {
		t.Fatal("60 KiB of text fits the encrypted limit")
	}
	mustFit(t, fitted, MaxEncryptedContentSize)

	// Limits too small for the note are raised.
	fitted, _, _, _ = FitWithin(Text(strings.Repeat("ö", 2000)), 10)
	mustFit(t, fitted, minFitLimit)
}

func TestFitCannotEncode(t *testing.T) {
	m := Message{Type: event.EventMessage}
	fitted, overflow, _, fits := Fit(m)
	if fits || overflow != nil || !equalMessages(fitted, m) {
		t.Errorf("Fit(nil content) = %+v, %v, %v", fitted, overflow, fits)
	}
	if _, err := ContentSize(m); !errors.Is(err, ErrInvalidContent) {
		t.Errorf("ContentSize(nil content) error = %v, want ErrInvalidContent", err)
	}
	if _, err := ContentSize(Message{Type: event.EventMessage, Content: make(chan int)}); err == nil {
		t.Error("ContentSize of a channel: no error")
	}
}

func equalMessages(a, b Message) bool {
	return a.Type == b.Type && a.Content == b.Content
}

func TestCutUTF8(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 2, "ab"},
		{"aå", 2, "a"},
		{"aå", 3, "aå"},
		{"🙂🙂", 7, "🙂"},
		{"🙂", 0, ""},
	}
	for _, tt := range tests {
		if got := cutUTF8(tt.s, tt.n); got != tt.want {
			t.Errorf("cutUTF8(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
