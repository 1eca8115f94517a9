package matrix_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

func TestCommandsParse(t *testing.T) {
	r := matrix.NewCommands("!")
	for _, tc := range []struct {
		name string
		text string
		want *matrix.Command // nil: expect err
		err  error
	}{
		{"plain", "!case 4711 status", &matrix.Command{Name: "case", Args: []string{"4711", "status"}, Raw: "4711 status"}, nil},
		{"no args", "!help", &matrix.Command{Name: "help", Raw: ""}, nil},
		{"name case", "!CASE 4711", &matrix.Command{Name: "case", Args: []string{"4711"}, Raw: "4711"}, nil},
		{"leading space", "  !case 4711", &matrix.Command{Name: "case", Args: []string{"4711"}, Raw: "4711"}, nil},
		{"many spaces", "!case   4711\t\tstatus  ", &matrix.Command{Name: "case", Args: []string{"4711", "status"}, Raw: "4711\t\tstatus  "}, nil},
		{"quoted", `!note 4711 "two words"`, &matrix.Command{Name: "note", Args: []string{"4711", "two words"}, Raw: `4711 "two words"`}, nil},
		{"curly quotes", "!note 4711 “two words”", &matrix.Command{Name: "note", Args: []string{"4711", "two words"}, Raw: "4711 “two words”"}, nil},
		{"empty quotes", `!note "" x`, &matrix.Command{Name: "note", Args: []string{"", "x"}, Raw: `"" x`}, nil},
		{"escapes in quotes", `!note "say \"hi\" \\ C:\temp"`, &matrix.Command{Name: "note", Args: []string{`say "hi" \ C:\temp`}, Raw: `"say \"hi\" \\ C:\temp"`}, nil},
		{"quote inside a word", `!note a"b c"d`, &matrix.Command{Name: "note", Args: []string{"ab cd"}, Raw: `a"b c"d`}, nil},
		{"newline separates", "!note 4711\nsecond line", &matrix.Command{Name: "note", Args: []string{"4711", "second", "line"}, Raw: "4711\nsecond line"}, nil},
		{"unicode", "!note ärende 😀", &matrix.Command{Name: "note", Args: []string{"ärende", "😀"}, Raw: "ärende 😀"}, nil},

		{"no prefix", "case 4711", nil, matrix.ErrNotCommand},
		{"empty", "", nil, matrix.ErrNotCommand},
		{"prefix only", "!", nil, matrix.ErrNotCommand},
		{"exclamation", "!!!", nil, matrix.ErrNotCommand},
		{"space after prefix", "! case", nil, matrix.ErrNotCommand},
		{"odd name", "!ca$e 1", nil, matrix.ErrNotCommand},
		{"prefix later", "see !case 4711", nil, matrix.ErrNotCommand},

		{"unterminated quote", `!note "open`, nil, matrix.ErrBadCommand},
		{"too long", "!note " + strings.Repeat("x", matrix.MaxCommandLength), nil, matrix.ErrBadCommand},
		{"too many args", "!note" + strings.Repeat(" a", matrix.MaxCommandArgs+1), nil, matrix.ErrBadCommand},
		{"long name", "!" + strings.Repeat("n", 100), nil, matrix.ErrBadCommand},
		{"invalid UTF-8", "!note \xff", nil, matrix.ErrBadCommand},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Parse(tc.text)
			if tc.want == nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse(%q) = %+v, %v; want error %v", tc.text, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.text, err)
			}
			if got.Name != tc.want.Name || !slices.Equal(got.Args, tc.want.Args) || got.Raw != tc.want.Raw {
				t.Errorf("Parse(%q) = %q %q raw %q; want %q %q raw %q", tc.text, got.Name, got.Args, got.Raw, tc.want.Name, tc.want.Args, tc.want.Raw)
			}
		})
	}
	if _, err := r.Parse("!note" + strings.Repeat(" a", matrix.MaxCommandArgs)); err != nil {
		t.Errorf("%d arguments: %v", matrix.MaxCommandArgs, err)
	}
}

func TestCommandsPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, text, name string
	}{
		{"", "!case 1", "case"}, // "" means "!"
		{"/", "/case 1", "case"},
		{"bot:", "bot:case 1", "case"},
		{"ärende-", "ärende-case", "case"},
	} {
		cmd, err := matrix.NewCommands(tc.prefix).Parse(tc.text)
		if err != nil || cmd.Name != tc.name {
			t.Errorf("prefix %q, %q: %+v, %v", tc.prefix, tc.text, cmd, err)
		}
	}
}

// TestCommandsIgnore: messages that are not commands for the router never reach a command and
// are not answered (the events here have no Client, so any answer would be an error).
func TestCommandsIgnore(t *testing.T) {
	r := matrix.NewCommands("!")
	r.Handle("case", "", func(ctx context.Context, cmd *matrix.Command) error {
		t.Errorf("command ran for %q", cmd.Raw)
		return nil
	})
	h := r.Handler()
	msg := func(c *event.MessageEventContent) *matrix.Event {
		return &matrix.Event{Event: &event.Event{ID: "$x", Type: event.EventMessage, Content: event.Content{Parsed: c}}}
	}
	for _, tc := range []struct {
		name string
		evt  *matrix.Event
	}{
		{"no prefix", msg(&event.MessageEventContent{MsgType: event.MsgText, Body: "case 4711"})},
		{"notice", msg(&event.MessageEventContent{MsgType: event.MsgNotice, Body: "!case 4711"})},
		{"emote", msg(&event.MessageEventContent{MsgType: event.MsgEmote, Body: "!case 4711"})},
		{"edit", msg(&event.MessageEventContent{MsgType: event.MsgText, Body: "!case 4711",
			RelatesTo: &event.RelatesTo{Type: event.RelReplace, EventID: "$orig"}})},
		{"unparsed", &matrix.Event{Event: &event.Event{Type: event.EventMessage}}},
		{"reaction", &matrix.Event{Event: &event.Event{Type: event.EventReaction, Content: event.Content{Parsed: &event.ReactionEventContent{}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h(t.Context(), tc.evt); err != nil {
				t.Errorf("handler: %v", err)
			}
		})
	}
}

func TestCommandsHandlePanics(t *testing.T) {
	r := matrix.NewCommands("!")
	nop := func(context.Context, *matrix.Command) error { return nil }
	r.Handle("case", "", nop)
	r.Handle("help", "my own help", nop) // replacing the built-in help is allowed
	for _, tc := range []struct {
		name string
		cmd  string
		fn   func(context.Context, *matrix.Command) error
	}{
		{"duplicate", "case", nop},
		{"duplicate, other case", "CASE", nop},
		{"empty name", "", nop},
		{"space in name", "two words", nop},
		{"nil function", "note", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", tc.cmd)
				}
			}()
			r.Handle(tc.cmd, "", tc.fn)
		})
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"!case 4711 status", `!note 4711 "two words"`, `!note "a \"b\" \\"`, "!note “x y”", `!x "`,
		"!", "!!", "! x", "", "x", "!\xff", "!a\t\n\r\v\f b", "!a \u00a0b\u2003c", `!a \"`, `!a "\`,
	} {
		f.Add("!", s)
	}
	f.Add("", "!case 1")
	f.Add("bot:", "bot:case 1")
	f.Fuzz(func(t *testing.T, prefix, text string) {
		cmd, err := matrix.NewCommands(prefix).Parse(text)
		if err != nil {
			if !errors.Is(err, matrix.ErrNotCommand) && !errors.Is(err, matrix.ErrBadCommand) {
				t.Fatalf("Parse(%q): unexpected error %v", text, err)
			}
			return
		}
		if len(text) > matrix.MaxCommandLength || !utf8.ValidString(text) {
			t.Fatalf("Parse accepted %d bytes (valid UTF-8: %v)", len(text), utf8.ValidString(text))
		}
		if cmd.Name == "" || cmd.Name != strings.ToLower(cmd.Name) || len(cmd.Args) > matrix.MaxCommandArgs {
			t.Fatalf("Parse(%q) = name %q, %d args", text, cmd.Name, len(cmd.Args))
		}
		if !strings.Contains(text, cmd.Raw) {
			t.Fatalf("Raw %q is not part of %q", cmd.Raw, text)
		}
		// Without quotes or backslashes, the arguments are the words of Raw.
		if !strings.ContainsAny(cmd.Raw, "\"“\\") && !slices.Equal(cmd.Args, strings.Fields(cmd.Raw)) {
			t.Fatalf("Args %q, want the words of %q", cmd.Args, cmd.Raw)
		}
	})
}

// TestCommandsEndToEnd: alice asks the bot about a case and gets the answer as a reply; an
// unknown command gets the list of commands.
func TestCommandsEndToEnd(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	room := syncRoom(t, alice, bot)

	cmds := matrix.NewCommands("!")
	cmds.Handle("case", "<id> status: show a case's status", func(ctx context.Context, cmd *matrix.Command) error {
		if len(cmd.Args) != 2 || cmd.Args[1] != "status" {
			_, err := cmd.Reply(ctx, matrix.Notice("Usage: !case <id> status"))
			return err
		}
		_, err := cmd.Reply(ctx, matrix.Notice("Case "+cmd.Args[0]+": awaiting decision"))
		return err
	})
	cmds.Handle("fail", "always fails", func(ctx context.Context, cmd *matrix.Command) error {
		return errors.New("case system down")
	})
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	s.OnMessage(cmds.Handler())
	startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })

	asked := mustSend(t, alice, room, "!case 4711 status")
	answer := matrixtest.WaitMessage(t, alice, room, "Case 4711: awaiting decision")
	msg := answer.Content.AsMessage()
	if answer.Sender != bot.UserID() || msg.MsgType != event.MsgNotice || msg.RelatesTo.GetReplyTo() != asked {
		t.Errorf("answer from %s, %s, in reply to %q; want a notice from the bot replying to %s",
			answer.Sender, msg.MsgType, msg.RelatesTo.GetReplyTo(), asked)
	}
	if msg.Mentions == nil || !slices.Contains(msg.Mentions.UserIDs, alice.UserID) {
		t.Errorf("the answer does not mention alice: %+v", msg.Mentions)
	}

	for _, tc := range []struct {
		ask, want string
	}{
		{"!nosuch", "Unknown command !nosuch. Commands: !case, !fail, !help."},
		{`!case "4711`, "I cannot read that command: a quote is not closed."},
		{"!fail", "Sorry, !fail failed."},
		{"!help", "Commands:\n!case — <id> status: show a case's status\n!fail — always fails\n!help — list the commands"},
	} {
		asked := mustSend(t, alice, room, tc.ask)
		got := matrixtest.WaitEvent(t, alice, room, func(e *event.Event) bool {
			return e.Sender == bot.UserID() && e.Content.AsMessage().RelatesTo.GetReplyTo() == asked
		})
		if body := got.Content.AsMessage().Body; body != tc.want {
			t.Errorf("%s: answered %q, want %q", tc.ask, body, tc.want)
		}
	}
	if n := s.Stats().HandlerErrors; n != 1 {
		t.Errorf("HandlerErrors = %d, want 1 (the failing command)", n)
	}
}
