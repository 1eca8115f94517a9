package matrix

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
)

// Limits on the commands Commands accepts: longer messages and more arguments are answered
// with an error notice instead of being handed to a command.
const (
	MaxCommandLength = 4096 // bytes of the whole message
	MaxCommandArgs   = 64
	maxCommandName   = 64
)

var (
	// ErrNotCommand is returned by Commands.Parse for text that is not a command: it does not
	// start with the prefix followed by a name. The router ignores such messages.
	ErrNotCommand = errors.New("matrix: not a command")
	// ErrBadCommand is wrapped by Commands.Parse's errors for a command it cannot read: too
	// long, too many arguments, an unterminated quote. The router answers them with a notice.
	ErrBadCommand = errors.New("matrix: malformed command")
)

// badCommand is a reason a command cannot be read, which the router shows the sender.
type badCommand string

func (b badCommand) Error() string { return ErrBadCommand.Error() + ": " + string(b) }
func (b badCommand) Unwrap() error { return ErrBadCommand }

// Command is a parsed command, such as `!note 4711 "two words"`.
type Command struct {
	Name  string   // lower-cased, without the prefix: "note"
	Args  []string // the words after the name: ["4711", "two words"]
	Raw   string   // the text after the name as typed, leading space removed: `4711 "two words"`
	Event *Event   // the message it came in; nil from Parse
}

// Reply answers the command's message (see Event.Reply).
func (c *Command) Reply(ctx context.Context, msg Message) (*Pending, error) {
	if c.Event == nil {
		return nil, errors.New("matrix: Command.Reply: the command has no event")
	}
	return c.Event.Reply(ctx, msg)
}

// Commands routes text messages that start with a prefix, such as "!case 4711 status", to the
// command of that name. Plug its Handler into Syncer.OnMessage.
//
// Arguments are separated by spaces; double quotes (straight or “curly”) group words into one,
// and inside straight quotes \" and \\ stand for " and \. Command names are matched without
// regard to case. Notices are never taken for commands (they come from bots), nor are edits.
// An unknown command is answered with a notice listing the commands; "help" is built in and
// lists them with their help texts.
type Commands struct {
	prefix string

	mu     sync.RWMutex
	routes map[string]route
}

type route struct {
	help string
	fn   func(ctx context.Context, cmd *Command) error
}

// NewCommands returns a router for commands starting with prefix; "" means "!".
func NewCommands(prefix string) *Commands {
	if prefix == "" {
		prefix = "!"
	}
	r := &Commands{prefix: prefix, routes: map[string]route{}}
	r.routes["help"] = route{help: "list the commands", fn: r.help}
	return r
}

// Handle registers fn for the command name, with a one-line help text shown by !help. Names
// are letters, digits, '-', '_' and '.'. It panics on an invalid name, a nil fn, or a name
// registered before (except "help", which may be replaced).
func (r *Commands) Handle(name string, help string, fn func(ctx context.Context, cmd *Command) error) {
	if !validCommandName(name) {
		panic(fmt.Sprintf("matrix: Commands.Handle: invalid command name %q", name))
	}
	if fn == nil {
		panic("matrix: Commands.Handle: nil function for " + name)
	}
	name = strings.ToLower(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.routes[name]; dup && name != "help" {
		panic("matrix: Commands.Handle: command registered twice: " + name)
	}
	r.routes[name] = route{help: help, fn: fn}
}

// Handler returns the function to register with Syncer.OnMessage. A command's error is
// returned to the Syncer, which logs it; the sender is told only that the command failed.
func (r *Commands) Handler() func(ctx context.Context, evt *Event) error {
	return func(ctx context.Context, evt *Event) error {
		msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if !ok || evt.Type.Type != event.EventMessage.Type || msg.MsgType != event.MsgText || msg.RelatesTo.GetReplaceID() != "" {
			return nil
		}
		cmd, err := r.Parse(event.TrimReplyFallbackText(msg.Body))
		if errors.Is(err, ErrNotCommand) {
			return nil
		}
		var bad badCommand
		if errors.As(err, &bad) {
			_, err := evt.Reply(ctx, Notice(fmt.Sprintf("I cannot read that command: %s.", string(bad))))
			return err
		}
		if err != nil {
			return err
		}
		cmd.Event = evt
		r.mu.RLock()
		rt, ok := r.routes[cmd.Name]
		r.mu.RUnlock()
		if !ok {
			var names []string
			for _, c := range r.list() {
				names = append(names, r.prefix+c.name)
			}
			_, err := evt.Reply(ctx, Notice(fmt.Sprintf("Unknown command %s%s. Commands: %s.", r.prefix, cmd.Name, strings.Join(names, ", "))))
			return err
		}
		if err := rt.fn(ctx, cmd); err != nil {
			// The details may be internal: they go to the log, not into the room.
			if _, rerr := evt.Reply(ctx, Notice(fmt.Sprintf("Sorry, %s%s failed.", r.prefix, cmd.Name))); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return fmt.Errorf("command %s%s: %w", r.prefix, cmd.Name, err)
		}
		return nil
	}
}

// Parse reads text as a command. It returns ErrNotCommand for text that is not one, and an
// error wrapping ErrBadCommand for a command it cannot read.
func (r *Commands) Parse(text string) (*Command, error) {
	text = strings.TrimLeftFunc(text, unicode.IsSpace)
	rest, ok := strings.CutPrefix(text, r.prefix)
	if !ok {
		return nil, ErrNotCommand
	}
	end := strings.IndexFunc(rest, unicode.IsSpace)
	if end < 0 {
		end = len(rest)
	}
	name := rest[:end]
	if name == "" || !validCommandName(name) {
		return nil, ErrNotCommand // "!!", "! hello", "!?": an exclamation, not a command
	}
	if len(text) > MaxCommandLength {
		return nil, badCommand(fmt.Sprintf("it is longer than %d bytes", MaxCommandLength))
	}
	if len(name) > maxCommandName {
		return nil, badCommand("the command name is too long")
	}
	if !utf8.ValidString(text) {
		return nil, badCommand("it is not valid UTF-8")
	}
	raw := strings.TrimLeftFunc(rest[end:], unicode.IsSpace)
	args, err := splitArgs(raw)
	if err != nil {
		return nil, err
	}
	return &Command{Name: strings.ToLower(name), Args: args, Raw: raw}, nil
}

// splitArgs splits s at spaces, keeping quoted parts together.
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
		quote rune // the closing quote awaited, or 0
	)
	flush := func() error {
		if len(args) == MaxCommandArgs {
			return badCommand(fmt.Sprintf("it has more than %d arguments", MaxCommandArgs))
		}
		args = append(args, cur.String())
		cur.Reset()
		inArg = false
		return nil
	}
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' && i < len(s) && (s[i] == '"' || s[i] == '\\') {
				cur.WriteByte(s[i])
				i++
			} else if c == quote {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case c == '"':
			quote, inArg = '"', true
		case c == '“':
			quote, inArg = '”', true
		case unicode.IsSpace(c):
			if inArg {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		default:
			cur.WriteRune(c)
			inArg = true
		}
	}
	if quote != 0 {
		return nil, badCommand("a quote is not closed")
	}
	if inArg {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return args, nil
}

func validCommandName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// help is the built-in help command.
func (r *Commands) help(ctx context.Context, cmd *Command) error {
	var b strings.Builder
	b.WriteString("Commands:")
	for _, c := range r.list() {
		fmt.Fprintf(&b, "\n%s%s", r.prefix, c.name)
		if c.help != "" {
			fmt.Fprintf(&b, " — %s", c.help)
		}
	}
	_, err := cmd.Reply(ctx, Notice(b.String()))
	return err
}

type namedRoute struct {
	name string
	route
}

// list returns the commands sorted by name.
func (r *Commands) list() []namedRoute {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]namedRoute, 0, len(r.routes))
	for name, rt := range r.routes {
		out = append(out, namedRoute{name, rt})
	}
	slices.SortFunc(out, func(a, b namedRoute) int { return strings.Compare(a.name, b.name) })
	return out
}
