package matrix

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// contentJSON returns m's content as a client would receive it.
func contentJSON(t *testing.T, m Message) map[string]any {
	t.Helper()
	b, err := json.Marshal(m.Content)
	if err != nil {
		t.Fatalf("marshal content: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("unmarshal content %s: %v", b, err)
	}
	return got
}

// asJSON turns a literal into the shape encoding/json decodes it to, so
// expectations can be written as Go values.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

type obj = map[string]any

func TestBuilders(t *testing.T) {
	tests := []struct {
		name     string
		msg      Message
		wantType event.Type
		want     obj      // top-level fields that must equal these
		absent   []string // top-level fields that must not be there
	}{
		{
			name:     "text",
			msg:      Text("hello"),
			wantType: event.EventMessage,
			want:     obj{"msgtype": "m.text", "body": "hello", "m.mentions": obj{}},
			absent:   []string{"format", "formatted_body", "m.relates_to"},
		},
		{
			name:     "notice",
			msg:      Notice("build passed"),
			wantType: event.EventMessage,
			want:     obj{"msgtype": "m.notice", "body": "build passed"},
		},
		{
			name:     "emote",
			msg:      Emote("waves"),
			wantType: event.EventMessage,
			want:     obj{"msgtype": "m.emote", "body": "waves"},
		},
		{
			name:     "markdown with formatting",
			msg:      Markdown("**Case 4711** is _overdue_"),
			wantType: event.EventMessage,
			want: obj{
				"msgtype":        "m.text",
				"body":           "**Case 4711** is _overdue_",
				"format":         "org.matrix.custom.html",
				"formatted_body": "<strong>Case 4711</strong> is <em>overdue</em>",
				"m.mentions":     obj{},
			},
		},
		{
			name:   "markdown without formatting stays plain",
			msg:    Markdown("it's a & b"),
			want:   obj{"body": "it's a & b"},
			absent: []string{"format", "formatted_body"},
		},
		{
			name: "markdown mention becomes a pill",
			msg:  Markdown("Ping @anna:example.se, please."),
			want: obj{
				"format":         "org.matrix.custom.html",
				"formatted_body": `Ping <a href="https://matrix.to/#/@anna:example.se">@anna:example.se</a>, please.`,
				"m.mentions":     obj{"user_ids": []any{"@anna:example.se"}},
			},
		},
		{
			name: "markdown mentions each user once",
			msg:  Markdown("@anna:example.se and @bo:example.se and @anna:example.se."),
			want: obj{"m.mentions": obj{"user_ids": []any{"@anna:example.se", "@bo:example.se"}}},
		},
		{
			name: "markdown leaves code, links and mail addresses alone",
			msg:  Markdown("`@anna:example.se` [@bo:example.se](https://example.se) carl@cc:example.se"),
			want: obj{
				"formatted_body": `<code>@anna:example.se</code> <a href="https://example.se">@bo:example.se</a> carl@cc:example.se`,
				"m.mentions":     obj{},
			},
		},
		{
			name: "markdown shows raw HTML as text",
			msg:  Markdown("<b>x</b> **y**"),
			want: obj{"formatted_body": "&lt;b&gt;x&lt;/b&gt; <strong>y</strong>"},
		},
		{
			name: "markdown drops dangerous links and foreign images",
			msg:  Markdown("[click](javascript:alert(1)) ![logo](https://tracker.example/p.gif) **b**"),
			want: obj{"formatted_body": "click logo <strong>b</strong>"},
		},
		{
			name: "html is sanitized and gets a plaintext body",
			msg:  HTML(`<p>Hello <b>world</b><script>alert(1)</script></p><ul><li>one</li><li>two</li></ul>`),
			want: obj{
				"msgtype":        "m.text",
				"body":           "Hello **world**\n\n* one\n* two",
				"format":         "org.matrix.custom.html",
				"formatted_body": "<p>Hello <b>world</b></p><ul><li>one</li><li>two</li></ul>",
			},
		},
		{
			name: "html pills notify nobody",
			msg:  HTML(`<a href="https://matrix.to/#/@anna:example.se">Anna</a>`),
			want: obj{"body": "Anna", "m.mentions": obj{}},
		},
		{
			name: "as notice",
			msg:  Markdown("**done**").AsNotice(),
			want: obj{"msgtype": "m.notice", "formatted_body": "<strong>done</strong>"},
		},
		{
			name: "as notice keeps media",
			msg:  File(ImageKind, "mxc://example.se/abc", "a.png", "image/png", 3).AsNotice(),
			want: obj{"msgtype": "m.image"},
		},
		{
			name: "mentioning",
			msg:  Notice("hi").Mentioning("@anna:example.se", "@bo:example.se", "@anna:example.se"),
			want: obj{"m.mentions": obj{"user_ids": []any{"@anna:example.se", "@bo:example.se"}}},
		},
		{
			name: "reply",
			msg:  Reply(&event.Event{ID: "$orig", Sender: "@anna:example.se"}, Text("yes")),
			want: obj{
				"m.relates_to": obj{"m.in_reply_to": obj{"event_id": "$orig"}},
				"m.mentions":   obj{"user_ids": []any{"@anna:example.se"}},
				"body":         "yes",
			},
		},
		{
			name: "reply to a parsed event in a thread stays in the thread",
			msg: Reply(&event.Event{ID: "$inner", Sender: "@anna:example.se", Content: event.Content{
				Parsed: &event.MessageEventContent{RelatesTo: &event.RelatesTo{Type: event.RelThread, EventID: "$root"}},
			}}, Text("yes")),
			want: obj{"m.relates_to": obj{
				"rel_type":      "m.thread",
				"event_id":      "$root",
				"m.in_reply_to": obj{"event_id": "$inner"},
			}},
		},
		{
			name: "reply to a raw event in a thread stays in the thread",
			msg: Reply(&event.Event{ID: "$inner", Content: event.Content{
				VeryRaw: json.RawMessage(`{"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`),
			}}, Text("yes")),
			want: obj{"m.relates_to": obj{
				"rel_type":      "m.thread",
				"event_id":      "$root",
				"m.in_reply_to": obj{"event_id": "$inner"},
			}},
		},
		{
			name: "reply to nothing is no reply",
			msg:  Reply(nil, Text("yes")),
			want: obj{"body": "yes"}, absent: []string{"m.relates_to"},
		},
		{
			name: "in thread",
			msg:  InThread("$root", "$latest", Notice("update")),
			want: obj{"m.relates_to": obj{
				"rel_type":        "m.thread",
				"event_id":        "$root",
				"is_falling_back": true,
				"m.in_reply_to":   obj{"event_id": "$latest"},
			}},
		},
		{
			name: "in thread without latest falls back to the root",
			msg:  InThread("$root", "", Notice("update")),
			want: obj{"m.relates_to": obj{
				"rel_type":        "m.thread",
				"event_id":        "$root",
				"is_falling_back": true,
				"m.in_reply_to":   obj{"event_id": "$root"},
			}},
		},
		{
			name: "edit",
			msg:  Edit("$orig", Markdown("**fixed** @anna:example.se")),
			want: obj{
				"msgtype":        "m.text",
				"body":           "* **fixed** @anna:example.se",
				"formatted_body": `* <strong>fixed</strong> <a href="https://matrix.to/#/@anna:example.se">@anna:example.se</a>`,
				"m.relates_to":   obj{"rel_type": "m.replace", "event_id": "$orig"},
				"m.mentions":     obj{},
				"m.new_content": obj{
					"msgtype":        "m.text",
					"body":           "**fixed** @anna:example.se",
					"format":         "org.matrix.custom.html",
					"formatted_body": `<strong>fixed</strong> <a href="https://matrix.to/#/@anna:example.se">@anna:example.se</a>`,
					"m.mentions":     obj{"user_ids": []any{"@anna:example.se"}},
				},
			},
		},
		{
			name: "edit drops the reply from the new content and notifies the newly mentioned",
			msg:  Edit("$orig", Reply(&event.Event{ID: "$q", Sender: "@anna:example.se"}, Text("b"))).Mentioning("@bo:example.se"),
			want: obj{
				"body":         "* b",
				"m.relates_to": obj{"rel_type": "m.replace", "event_id": "$orig"},
				"m.mentions":   obj{"user_ids": []any{"@bo:example.se"}},
				"m.new_content": obj{
					"msgtype":    "m.text",
					"body":       "b",
					"m.mentions": obj{"user_ids": []any{"@anna:example.se", "@bo:example.se"}},
				},
			},
		},
		{
			name:     "reaction",
			msg:      Reaction("$orig", "👍"),
			wantType: event.EventReaction,
			want: obj{"m.relates_to": obj{
				"rel_type": "m.annotation",
				"event_id": "$orig",
				"key":      "👍",
			}},
		},
		{
			name:     "file",
			msg:      File(FileKind, "mxc://example.se/abc", "beslut.pdf", "application/pdf", 12345),
			wantType: event.EventMessage,
			want: obj{
				"msgtype":  "m.file",
				"body":     "beslut.pdf",
				"filename": "beslut.pdf",
				"url":      "mxc://example.se/abc",
				"info":     obj{"mimetype": "application/pdf", "size": 12345.0},
			},
			absent: []string{"file"},
		},
		{
			name: "image with size",
			msg:  File(ImageKind, "mxc://example.se/abc", "karta.png", "image/png", 10).WithImageSize(640, 480),
			want: obj{
				"msgtype": "m.image",
				"info":    obj{"mimetype": "image/png", "size": 10.0, "w": 640.0, "h": 480.0},
			},
		},
		{
			name: "video and audio",
			msg:  File(VideoKind, "mxc://example.se/v", "v.mp4", "video/mp4", 1),
			want: obj{"msgtype": "m.video"},
		},
		{
			name: "audio",
			msg:  File(AudioKind, "mxc://example.se/a", "a.ogg", "audio/ogg", 1),
			want: obj{"msgtype": "m.audio"},
		},
		{
			name: "encrypted file",
			msg: EncryptedFile(ImageKind, &event.EncryptedFileInfo{
				EncryptedFile: attachment.EncryptedFile{Version: "v2"},
				URL:           "mxc://example.se/enc",
			}, "karta.png", "image/png", 10),
			want: obj{
				"msgtype":  "m.image",
				"filename": "karta.png",
				"file":     obj{"url": "mxc://example.se/enc", "v": "v2"},
			},
			absent: []string{"url"},
		},
		{
			name: "image size on text does nothing",
			msg:  Text("x").WithImageSize(1, 2),
			want: obj{"body": "x"}, absent: []string{"info"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantType.Type != "" && tt.msg.Type != tt.wantType {
				t.Errorf("type = %v, want %v", tt.msg.Type, tt.wantType)
			}
			got := contentJSON(t, tt.msg)
			for key, want := range tt.want {
				want = asJSON(t, want)
				if key == "m.new_content" || key == "file" {
					// Compare only the fields the test names.
					sub, _ := got[key].(map[string]any)
					for k, v := range want.(map[string]any) {
						if !reflect.DeepEqual(sub[k], v) {
							t.Errorf("%s.%s = %#v, want %#v", key, k, sub[k], v)
						}
					}
					continue
				}
				if !reflect.DeepEqual(got[key], want) {
					t.Errorf("%s = %#v, want %#v", key, got[key], want)
				}
			}
			for _, key := range tt.absent {
				if v, ok := got[key]; ok {
					t.Errorf("%s = %#v, want it absent", key, v)
				}
			}
		})
	}
}

func TestNewContentHasNoRelation(t *testing.T) {
	m := Edit("$orig", InThread("$root", "$latest", Text("x")))
	c := m.Content.(*event.MessageEventContent)
	if c.NewContent.RelatesTo != nil {
		t.Errorf("m.new_content.m.relates_to = %+v, want none", c.NewContent.RelatesTo)
	}
}

func TestEditOfEditEditsTheText(t *testing.T) {
	m := Edit("$second", Edit("$first", Text("x")))
	c := m.Content.(*event.MessageEventContent)
	if c.Body != "* x" || c.NewContent.Body != "x" || c.RelatesTo.EventID != "$second" {
		t.Errorf("got body %q, new body %q, target %s", c.Body, c.NewContent.Body, c.RelatesTo.EventID)
	}
}

func TestBuildersDoNotChangeTheirInput(t *testing.T) {
	orig := Markdown("hi @anna:example.se").Mentioning("@bo:example.se")
	before := contentJSON(t, orig)

	_ = orig.AsNotice()
	_ = orig.Mentioning("@carl:example.se")
	_ = Reply(&event.Event{ID: "$q", Sender: "@dan:example.se"}, orig)
	_ = InThread("$root", "$latest", orig)
	_ = Edit("$orig", orig)
	_ = Edit("$orig", orig).Mentioning("@eve:example.se")

	if after := contentJSON(t, orig); !reflect.DeepEqual(before, after) {
		t.Errorf("original changed:\nbefore %v\nafter  %v", before, after)
	}
}

func TestMethodsPassOtherContentThrough(t *testing.T) {
	r := Reaction("$orig", "👍")
	for name, m := range map[string]Message{
		"AsNotice":      r.AsNotice(),
		"Mentioning":    r.Mentioning("@anna:example.se"),
		"Reply":         Reply(&event.Event{ID: "$q"}, r),
		"InThread":      InThread("$root", "", r),
		"Edit":          Edit("$x", r),
		"WithImageSize": r.WithImageSize(1, 1),
	} {
		if !reflect.DeepEqual(m, r) {
			t.Errorf("%s changed a reaction: %+v", name, m.Content)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		msg    Message
		reason string // empty when the message is valid
	}{
		{"text", Text("hi"), ""},
		{"markdown", Markdown("**hi** @anna:example.se"), ""},
		{"html", HTML("<b>hi</b>"), ""},
		{"reply in thread", Reply(&event.Event{ID: "$q", Sender: "@a:b.c"}, InThread("$r", "", Notice("hi"))), ""},
		{"edit", Edit("$orig", Text("hi")), ""},
		{"reaction", Reaction("$orig", "👍"), ""},
		{"file", File(FileKind, "mxc://example.se/abc", "a.pdf", "application/pdf", 1), ""},
		{"encrypted file", EncryptedFile(FileKind, &event.EncryptedFileInfo{URL: "mxc://example.se/abc"}, "a.pdf", "", 1), ""},
		{"value content", Message{Type: event.EventMessage, Content: event.MessageEventContent{MsgType: event.MsgText, Body: "hi"}}, ""},

		{"empty type", Message{Content: Text("x").Content}, "empty event type"},
		{"unknown type", Message{Type: event.Type{Type: "com.example.case", Class: event.MessageEventType}, Content: Text("x").Content}, "not a known room message event"},
		{"state type", Message{Type: event.StateTopic, Content: &event.TopicEventContent{Topic: "x"}}, "not a known room message event"},
		{"nil content", Message{Type: event.EventMessage}, "nil content"},
		{"nil pointer content", Message{Type: event.EventMessage, Content: (*event.MessageEventContent)(nil)}, "nil content"},
		{"wrong content type", Message{Type: event.EventReaction, Content: Text("x").Content}, "content of m.reaction"},
		{"empty body", Text(""), "m.text with empty body"},
		{"blank body", Notice(" \n\t"), "m.notice with empty body"},
		{"empty markdown", Markdown(""), "empty body"},
		{"no msgtype", Message{Type: event.EventMessage, Content: &event.MessageEventContent{Body: "x"}}, "empty msgtype"},
		{"invalid UTF-8 body", Text("a\xffb"), "body is not valid UTF-8"},
		{"invalid UTF-8 in edit", Edit("$o", Text("a\xffb")), "body is not valid UTF-8"},
		{"invalid UTF-8 file name", File(FileKind, "mxc://example.se/abc", "a\xff", "", 1), "not valid UTF-8"},
		{"invalid mention", Text("x").Mentioning("anna"), "mention of invalid user ID"},
		{"unknown media kind", File(MediaKind(9), "mxc://example.se/abc", "a", "", 1), "empty msgtype"},
		{"media without source", File(FileKind, "", "a.pdf", "", 1), "without url or file"},
		{"media with http source", File(ImageKind, "https://example.se/a.png", "a.png", "", 1), "source"},
		{"new content without replace", Message{Type: event.EventMessage, Content: &event.MessageEventContent{
			MsgType: event.MsgText, Body: "x", NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "y"},
		}}, "without an m.replace relation"},
		{"thread without root", InThread("", "", Text("x")), "m.thread relation without an event"},
		{"edit without target", Edit("", Text("x")), "m.replace relation without an event"},
		{"reply without event", Message{Type: event.EventMessage, Content: &event.MessageEventContent{
			MsgType: event.MsgText, Body: "x", RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{}},
		}}, "reply without an event"},
		{"reaction without key", Reaction("$orig", ""), "reaction with empty key"},
		{"reaction without target", Reaction("", "👍"), "without target"},
		{"reaction key invalid UTF-8", Reaction("$orig", "\xff"), "key is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.msg.Validate()
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidContent) {
				t.Fatalf("Validate() = %v, want ErrInvalidContent", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Validate() = %q, want reason %q", err, tt.reason)
			}
		})
	}
}

func TestMarkdownFallsBackToPlainWhenHTMLWouldExplode(t *testing.T) {
	wideTable := strings.Repeat("|a", 2000) + "\n" + strings.Repeat("|-", 2000) + "\n" + strings.Repeat("x\n", 4000)
	oneLinkManyTimes := "[a]: https://example.se/" + strings.Repeat("y", 4000) + "\n\n" + strings.Repeat("[a]", 4000)
	tooLong := strings.Repeat("**b** ", MaxContentSize/6+1)
	for name, md := range map[string]string{"wide table": wideTable, "repeated link": oneLinkManyTimes, "too long": tooLong} {
		c := Markdown(md).Content.(*event.MessageEventContent)
		if c.FormattedBody != "" || c.Body != md {
			t.Errorf("%s: formatted_body of %d bytes, body kept %v; want plain text", name, len(c.FormattedBody), c.Body == md)
		}
	}
}

func TestMarkdownRendersLikeMautrix(t *testing.T) {
	// Markdown calls goldmark itself to cap the output; it must not drift
	// from the rendering format.RenderMarkdown gives every other client
	// built on mautrix.
	for _, md := range []string{
		"**b** _i_ ~~s~~ `c`",
		"# Title\n\n- one\n- two\n\n1. a\n2. b",
		"> quote\n\nline one\nline two",
		"|a|b|\n|-|-|\n|1|2|",
		"||spoiler||",
		"```go\nx := 1\n```",
		"[link](https://example.se)",
	} {
		want := formatRenderMarkdown(md)
		got := Markdown(md).Content.(*event.MessageEventContent).FormattedBody
		if got != SanitizeHTML(want) {
			t.Errorf("Markdown(%q):\n got %q\nwant %q", md, got, SanitizeHTML(want))
		}
	}
}

func TestUserIDsInText(t *testing.T) {
	tests := []struct {
		text string
		want []id.UserID
	}{
		{"@anna:example.se", []id.UserID{"@anna:example.se"}},
		{"(@anna:example.se)", []id.UserID{"@anna:example.se"}},
		{"@anna:example.se:8448 and @bo:[::1]", []id.UserID{"@anna:example.se:8448", "@bo:[::1]"}},
		{"end of sentence @anna:example.se.", []id.UserID{"@anna:example.se"}},
		{"anna@example.se", nil},
		{"x@anna:example.se", nil},
		{"@Anna:example.se", nil}, // not the spec's localpart grammar
		{"@anna:", nil},
		{"@" + strings.Repeat("a", 300) + ":example.se", nil}, // over 255 bytes
	}
	for _, tt := range tests {
		_, got := linkUserIDs(tt.text)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("linkUserIDs(%q) found %v, want %v", tt.text, got, tt.want)
		}
	}
}

func formatRenderMarkdown(md string) string {
	c := format.RenderMarkdown(md, true, false)
	if c.Format != event.FormatHTML {
		return c.Body
	}
	return c.FormattedBody
}
