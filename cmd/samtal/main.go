// Command samtal is the samtal gateway daemon and a command-line tool for scripting Matrix.
//
// Build with the pure-Go Olm: go build -tags goolm ./cmd/samtal
//
//	samtal dev      run a development homeserver on this machine (samtal dev user add NAME adds users)
//	samtal login    log in and store the session
//	samtal logout   end the stored session
//	samtal send     send a message or a file into a room
//	samtal room     create, ensure, join rooms and invite to them
//	samtal tail     print the messages arriving in rooms
//	samtal e2ee     encryption: status, cross-signing bootstrap, recovery, verification
//	samtal outbox   list the outbox, retry or drop items that failed
//	samtal federation  the agencies' federation list: check servers, list members, sign
//	samtal gateway  run the mail gateway (--config gateway.yaml); gateway spool list|show|retry
//	samtal find     find a colleague's Matrix ID by email address
//	samtal chat     send a message into the direct chat with a colleague found by email
//	samtal offboard plan (--dry-run) or --apply the removal of people who left
//	samtal audit    print the offboarding audit log
//	samtal version  print samtal's version
//
// Flags may come anywhere on the line, before or after the arguments; after "--" everything
// is an argument (a message that starts with "-", say). --log-level (debug, info, warn, error;
// default warn, info for dev) goes with every command, and so does --json where a command
// prints results: errors are then printed as one JSON object on standard error too.
//
// The account: the first command logs in with SAMTAL_USER and SAMTAL_PASSWORD (or
// SAMTAL_ACCESS_TOKEN) from the environment, on the homeserver named by --homeserver or
// SAMTAL_HOMESERVER, and stores the session in the database named by --db or SAMTAL_DB
// (default $XDG_DATA_HOME/samtal/samtal.db, else ~/.local/share/samtal/samtal.db). Later
// commands need only the database. A password is never taken as a flag, since flags show in
// ps. --session names one of several accounts kept in one database.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=casebot
//	read -rs SAMTAL_PASSWORD; export SAMTAL_PASSWORD
//	samtal login
//	unset SAMTAL_PASSWORD
//	samtal room ensure --case 4711 '#case-4711:agency.example'
//	samtal send '#case-4711:agency.example' 'Decision made'
//
// Exit codes that scripts can test: 0 success, 1 failure, 2 bad usage or input (flags,
// arguments, a malformed room ID, an empty message), 3 not found (unknown room or alias, or a
// room the account is not in), 4 authentication (no stored session and no credentials, wrong
// credentials, a revoked session), 5 rate limited or the homeserver unavailable (try again
// later).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"maunium.net/go/mautrix"

	"github.com/samtalhq/samtal/matrix"
)

// Exit codes that scripts can test.
const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitAuth        = 4
	exitUnavailable = 5
)

var (
	// errUsage marks an error in how the command was called.
	errUsage = errors.New("usage")
	// errAuth marks a command that cannot act as the account: not logged in, or no longer.
	errAuth = errors.New("not logged in")
	// errUnavailable marks a homeserver that did not answer in time.
	errUnavailable = errors.New("homeserver unavailable")
)

// command is one subcommand of samtal.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a command reads and writes besides its arguments and the environment variables,
// so tests can run commands in-process.
type env struct {
	stdin          io.Reader // nil reads as a terminal: nothing piped in
	stdout, stderr io.Writer
	log            *slog.Logger
	level          *slog.LevelVar // the level of log; nil when the caller chose a logger of its own
}

func commands() []command {
	return []command{
		{"dev", "run a development homeserver (Dendrite) on this machine; 'dev user add NAME' adds users", runDev},
		{"login", "log in with SAMTAL_USER and SAMTAL_PASSWORD and store the session", runLogin},
		{"logout", "end the stored session at the homeserver and forget it", runLogout},
		{"send", "send a message or a file into a room", runSend},
		{"room", "create, ensure or join rooms, and invite people to them", runRoom},
		{"tail", "print the messages arriving in rooms until interrupted", runTail},
		{"e2ee", "end-to-end encryption: status, bootstrap, recover, verify", runE2EE},
		{"outbox", "list the outbox, retry or drop items that failed", runOutbox},
		{"federation", "the agencies' federation list: check servers, list members, sign", runFederation},
		{"gateway", "run the mail gateway (--config gateway.yaml); 'gateway spool list|show|retry' for its spool", runGateway},
		// identity (issue 11): directory, direct chats, offboarding.
		{"find", "find a colleague's Matrix ID by email address", runFind},
		{"chat", "send a message into the direct chat with a colleague found by email", runChat},
		{"offboard", "plan (--dry-run) or --apply the removal of people who left", runOffboard},
		{"audit", "print the offboarding audit log", runAudit},
		{"version", "print samtal's version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := new(slog.LevelVar)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, level: level,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	os.Exit(run(ctx, e, os.Args[1:]))
}

func run(ctx context.Context, e *env, args []string) int {
	args, level, err := takeLogLevel(args)
	if err != nil {
		fmt.Fprintf(e.stderr, "samtal: %v\n", err)
		return exitUsage
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if e.level != nil {
			switch {
			case level != nil:
				e.level.Set(*level)
			case c.name == "dev":
				e.level.Set(slog.LevelInfo) // what the homeserver is doing is the point
			default:
				e.level.Set(slog.LevelWarn) // quiet: migrations and the like only when asked
			}
		}
		err := c.run(ctx, e, args[1:])
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		code := exitCode(err)
		if jsonRequested(args[1:]) {
			_ = json.NewEncoder(e.stderr).Encode(errorResult{Command: c.name, Error: err.Error(), ExitCode: code})
		} else {
			fmt.Fprintf(e.stderr, "samtal %s: %v\n", c.name, err)
		}
		return code
	}
	fmt.Fprintf(e.stderr, "samtal: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return exitUsage
}

// exitCode is the exit code for a command's error. A failure to reach the server comes before
// authentication, so that a login that could not be tried is not taken for a wrong password.
func exitCode(err error) int {
	switch {
	case errors.Is(err, errUsage), errors.Is(err, matrix.ErrInvalidRoom),
		errors.Is(err, matrix.ErrInvalidUserID), errors.Is(err, matrix.ErrInvalidContent):
		return exitUsage
	case unavailable(err):
		return exitUnavailable
	case errors.Is(err, errAuth), errors.Is(err, matrix.ErrUnknownToken), errors.Is(err, matrix.ErrLogin),
		errors.Is(err, mautrix.MUnknownToken), errors.Is(err, mautrix.MMissingToken):
		return exitAuth
	case errors.Is(err, matrix.ErrNotFound), errors.Is(err, mautrix.MNotFound):
		return exitNotFound
	}
	return exitFail
}

// unavailable reports whether err means "try again later": a rate limit, a server error, no
// answer. The errors of calls made through Client.Mautrix are mautrix's own, hence both kinds.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var he *matrix.HTTPError
	var mx mautrix.HTTPError
	var op *net.OpError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, errUnavailable), errors.Is(err, matrix.ErrRateLimited), errors.Is(err, mautrix.MLimitExceeded):
		return true
	case errors.As(err, &he):
		return he.Temporary()
	case errors.As(err, &mx) && mx.Response != nil:
		return mx.Response.StatusCode >= 500
	case errors.As(err, &op), errors.As(err, &dns):
		return true
	case errors.As(err, &ne):
		return ne.Timeout()
	}
	return false
}

// errorResult is a failed command's error as --json prints it on standard error.
type errorResult struct {
	Command  string `json:"command"`
	Error    string `json:"error"`
	ExitCode int    `json:"exit_code"`
}

// takeLogLevel takes --log-level LEVEL (or --log-level=LEVEL) out of args, wherever it is
// before "--", and returns the other arguments and the level (nil if not given).
func takeLogLevel(args []string) ([]string, *slog.Level, error) {
	var rest []string
	var level *slog.Level
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "log-level" {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 == len(args) {
				return nil, nil, fmt.Errorf("--log-level needs a value: debug, info, warn or error")
			}
			i++
			value = args[i]
		}
		var l slog.Level
		if err := l.UnmarshalText([]byte(value)); err != nil {
			return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", value)
		}
		level = &l
	}
	return rest, level, nil
}

// jsonRequested reports whether a command's arguments ask for JSON output.
func jsonRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-json", "--json", "-json=true", "--json=true":
			return true
		}
	}
	return false
}

// version is samtal's version, set when building a release with
// -ldflags "-X main.version=v1.2.3"; otherwise the module's version from the build.
var version = ""

func runVersion(_ context.Context, e *env, args []string) error {
	fs := newFlags(e, "version")
	asJSON := fs.Bool("json", false, `print {"version":...,"go":...,"revision":...}`)
	setUsage(fs, "version [--json]", "Prints samtal's version, the Go version it was built with and, for a build from a git\ncheckout, the commit.")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	v := struct {
		Version  string `json:"version"`
		Go       string `json:"go"`
		Revision string `json:"revision,omitempty"`
	}{Version: version, Go: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Go = bi.GoVersion
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Revision = s.Value
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(v)
	}
	line := "samtal " + v.Version + " (" + v.Go
	if v.Revision != "" {
		line += ", " + v.Revision
	}
	_, err = fmt.Fprintln(e.stdout, line+")")
	return err
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: samtal COMMAND [flags] [arguments]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'samtal COMMAND -h' for a command's flags. Flags may come before or after the arguments;
after "--" everything is an argument. Every command takes --log-level debug|info|warn|error
(default warn; info for dev), and with --json errors are printed as JSON too.

The first command that needs the account logs in with SAMTAL_USER and SAMTAL_PASSWORD (or
SAMTAL_ACCESS_TOKEN) from the environment, on the homeserver named by --homeserver or
SAMTAL_HOMESERVER, and stores the session in the database (--db, SAMTAL_DB). Later commands
need only the database. Passwords are never taken as flags: flags show in 'ps'.

Exit codes:
  0  success
  1  failure
  2  bad usage or input: flags, arguments, a malformed room ID, an empty message
  3  not found: unknown room or alias, or a room the account is not in
  4  authentication: not logged in, wrong credentials, session revoked
  5  rate limited or homeserver unavailable: try again later
`)
}

// newFlags returns a flag set whose errors come back to run instead of exiting.
func newFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("samtal "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// setUsage makes fs -h print synopsis ("send [flags] ROOM [TEXT...]") and details above the
// flags.
func setUsage(fs *flag.FlagSet, synopsis, details string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: samtal %s\n\n", synopsis)
		if details != "" {
			fmt.Fprintf(w, "%s\n\n", details)
		}
		fmt.Fprintln(w, "Flags:")
		fs.PrintDefaults()
	}
}

// parse parses args, turning flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// parseInterspersed parses args with flags allowed between the arguments, as in
// `room ensure ALIAS --name N`, and returns the arguments. After "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if consumed := args[:len(args)-len(left)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(rest, left...), nil
		}
		if len(left) == 0 {
			return rest, nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// parseNoArgs parses args, flags only: any argument is a usage error.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	rest, err := parseInterspersed(fs, args)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	return err
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return fmt.Sprint(*l) }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
