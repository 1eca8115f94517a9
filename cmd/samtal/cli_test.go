package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestCommandLine covers what needs no homeserver: version, --log-level, errors as JSON,
// flags after arguments, and usage errors that must exit 2.
func TestCommandLine(t *testing.T) {
	clearEnv(t)
	t.Setenv("SAMTAL_USER", "alice")
	t.Setenv("SAMTAL_PASSWORD", "not used")
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // in stdout
		stderr     string // in stderr
		jsonStderr bool   // stderr is one JSON error object
	}{
		{args: []string{"version"}, code: exitOK, stdout: "samtal "},
		{args: []string{"version", "--json"}, code: exitOK, stdout: `"version":`},
		{args: []string{"--log-level", "debug", "version"}, code: exitOK, stdout: "samtal "},
		{args: []string{"version", "--log-level=error"}, code: exitOK, stdout: "samtal "},
		{args: []string{"--log-level", "loud", "version"}, code: exitUsage, stderr: `--log-level "loud"`},
		{args: []string{"version", "--log-level"}, code: exitUsage, stderr: "needs a value"},
		{args: []string{"help"}, code: exitOK, stderr: "version  print samtal's version"},
		{args: []string{"send", "!room:example.org", "hello", "--bogus"}, code: exitUsage, stderr: "flag provided but not defined: -bogus"},
		{args: []string{"send", "general", "hi", "--json"}, code: exitUsage, stderr: `"exit_code":2`, jsonStderr: true},
		{args: []string{"login", "--homeserver", "matrix.agency.example"}, code: exitUsage, stderr: `homeserver "matrix.agency.example" is not a URL`},
		{args: []string{"send", "--homeserver", "127.0.0.1:8008", "!r:example.org", "hi"}, code: exitUsage, stderr: "is not a URL"},
		{args: []string{"room", "ensure", "#case-1:example.org", "--alias", "case-2"}, code: exitUsage, stderr: "takes the alias as its argument only"},
		{args: []string{"login", "extra", "--json"}, code: exitUsage, stderr: `"error":"usage: unexpected arguments`, jsonStderr: true},
		{args: []string{"logout", "extra"}, code: exitUsage, stderr: "unexpected arguments"},
		{args: []string{"e2ee", "status", "!a:x", "extra"}, code: exitUsage, stderr: "unexpected arguments"},
		{args: []string{"e2ee", "status", "-h"}, code: exitOK, stderr: "Prints this device's keys"},
		{args: []string{"e2ee", "bootstrap", "-h"}, code: exitOK, stderr: "prints the recovery key once"},
		{args: []string{"e2ee", "verify", "-h"}, code: exitOK, stderr: "comparing emoji"},
		{args: []string{"tail", "--limit", "-1"}, code: exitUsage, stderr: "--limit"},
		{args: []string{"tail", "--since", "yesterday"}, code: exitUsage, stderr: "--since"},
	} {
		r := samtal(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("samtal %q: exit %d, stdout %q, stderr %q; want exit %d, %q and %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
		}
		if tc.jsonStderr {
			var v errorResult
			if err := json.Unmarshal([]byte(r.stderr), &v); err != nil || v.ExitCode != tc.code || v.Error == "" {
				t.Errorf("samtal %q: stderr %q is not a JSON error (%v)", tc.args, r.stderr, err)
			}
		}
	}
	if _, err := os.Stat(os.Getenv("SAMTAL_DB")); !os.IsNotExist(err) {
		t.Errorf("commands that failed before logging in left a database behind: %v", err)
	}
}

// TestFlagsAfterRoom: flags after ROOM (or after the text) are flags for send, as for every
// command, never text; after "--" they are text.
func TestFlagsAfterRoom(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)
	for _, tc := range []struct {
		args      []string
		msgType   event.MessageType
		body      string
		formatted string
	}{
		{[]string{"send", string(room), "--markdown", "**approved**"}, event.MsgText, "**approved**", "<strong>approved</strong>"},
		{[]string{"send", string(room), "build", "passed", "--notice"}, event.MsgNotice, "build passed", ""},
		{[]string{"send", string(room), "--", "--markdown", "is", "a", "flag"}, event.MsgText, "--markdown is a flag", ""},
	} {
		evt := id.EventID(mustSamtal(t, tc.args...))
		got := waitEventID(t, bob, room, evt).Content.AsMessage()
		if got.MsgType != tc.msgType || got.Body != tc.body || !strings.Contains(got.FormattedBody, tc.formatted) {
			t.Errorf("samtal %q: bob read %s %q (%q)", tc.args, got.MsgType, got.Body, got.FormattedBody)
		}
	}
	if r := samtal(t, nil, "send", string(room), "hi", "--bogus"); r.code != exitUsage {
		t.Errorf("an unknown flag after the text: exit %d, %s", r.code, r.stderr)
	}
	for _, b := range bodies(t, bob, room) {
		if strings.Contains(b, "--bogus") {
			t.Errorf("a flag was sent as text: %q", b)
		}
	}
}

// TestNothingOnDiskAfterFailedLogin: a first command that cannot log in leaves no database
// (nor the directory made for it) behind.
func TestNothingOnDiskAfterFailedLogin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	closed := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	for _, tc := range []struct {
		name, homeserver, user, password string
		code                             int
	}{
		{"wrong password", srv.URL, "alice", "wrong", exitAuth},
		{"homeserver down", closed, "alice", "pw", exitUnavailable},
		{"no credentials", srv.URL, "", "", exitAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			srv.RegisterUser(t, "alice-"+strings.ReplaceAll(tc.name, " ", "-"))
			dir := filepath.Join(t.TempDir(), "new", "samtal")
			t.Setenv("SAMTAL_DB", filepath.Join(dir, "samtal.db"))
			t.Setenv("SAMTAL_HOMESERVER", tc.homeserver)
			t.Setenv("SAMTAL_USER", tc.user)
			t.Setenv("SAMTAL_PASSWORD", tc.password)
			for _, args := range [][]string{{"login"}, {"room", "create"}} {
				if r := samtal(t, nil, args...); r.code != tc.code {
					t.Errorf("samtal %q: exit %d, want %d: %s", args, r.code, tc.code, r.stderr)
				}
				if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
					t.Errorf("samtal %q left %s behind (%v)", args, filepath.Dir(dir), err)
				}
			}
		})
	}
}

// TestQuietFirstUse: the first login prints no INFO lines (database migrations, encryption
// set-up) unless --log-level asks for them.
func TestQuietFirstUse(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "alice")
	for _, tc := range []struct {
		args []string
		info bool
	}{
		{[]string{"login"}, false},
		{[]string{"login", "--log-level", "info"}, true},
	} {
		clearEnv(t)
		t.Setenv("SAMTAL_HOMESERVER", srv.URL)
		t.Setenv("SAMTAL_USER", "alice")
		t.Setenv("SAMTAL_PASSWORD", password)
		e, _, errOut := testEnv()
		e.level = new(slog.LevelVar)
		e.log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: e.level}))
		if code := run(context.Background(), e, tc.args); code != exitOK {
			t.Fatalf("samtal %q: exit %d: %s", tc.args, code, errOut)
		}
		if got := strings.Contains(errOut.String(), "level=INFO"); got != tc.info {
			t.Errorf("samtal %q: INFO lines %t, want %t:\n%s", tc.args, got, tc.info, errOut)
		}
	}
}
