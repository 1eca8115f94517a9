package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestExitCodes runs commands that go wrong the ways scripts must tell apart.
func TestExitCodes(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	room := mustSamtal(t, "room", "create", "--unencrypted")
	other := "@bob:" + srv.ServerName
	unknownAlias := "#nope:" + srv.ServerName

	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"send", unknownAlias, "hi"}, exitNotFound, "no room has the alias " + unknownAlias},
		{[]string{"send", "!unknown:" + srv.ServerName, "hi"}, exitNotFound, "is not a room @alice:"},
		{[]string{"tail", unknownAlias}, exitNotFound, "no room has the alias"},
		{[]string{"room", "invite", unknownAlias, other}, exitNotFound, "no room has the alias"},
		{[]string{"send", "general", "hi"}, exitUsage, "neither a room ID"},
		{[]string{"send", "!no room", "hi"}, exitUsage, "is not a room ID"},
		{[]string{"send", room, ""}, exitUsage, "the message is empty"},
		{[]string{"send", room, " ", "\n"}, exitUsage, "the message is empty"},
		{[]string{"send", room}, exitUsage, "missing TEXT"},
		{[]string{"send"}, exitUsage, "missing ROOM"},
		{[]string{"send", "--file", "/does/not/exist", room}, exitUsage, "no such file"},
		{[]string{"send", "--file", "/etc/hostname", room, "caption"}, exitUsage, "--file takes no TEXT"},
		{[]string{"room"}, exitUsage, "missing subcommand"},
		{[]string{"room", "delete"}, exitUsage, `unknown subcommand "delete"`},
		{[]string{"room", "create", "--preset", "secret"}, exitUsage, `--preset "secret"`},
		{[]string{"room", "create", "--preset", "case"}, exitUsage, "needs --case"},
		{[]string{"room", "create", "--invite", "bob"}, exitUsage, "invalid user ID"},
		{[]string{"room", "ensure", "#case-1:elsewhere.example"}, exitUsage, "is not on " + srv.ServerName},
		{[]string{"room", "invite", room, "bob"}, exitUsage, "invalid user ID"},
		{[]string{"login", "extra"}, exitUsage, "unexpected arguments"},
	} {
		r := samtal(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("samtal %q: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

// TestExitCodesLogin covers first uses that cannot log in.
func TestExitCodesLogin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "alice")
	closed := "http://127.0.0.1:" + strconv.Itoa(freePort(t))

	for _, tc := range []struct {
		name                          string
		homeserver, user, pass, token string
		code                          int
		want                          string
	}{
		{"no credentials", srv.URL, "", "", "", exitAuth, "set SAMTAL_USER and SAMTAL_PASSWORD"},
		{"no password", srv.URL, "alice", "", "", exitAuth, "SAMTAL_PASSWORD is not"},
		{"wrong password", srv.URL, "alice", "wrong", "", exitAuth, "login failed"},
		{"bad token", srv.URL, "", "", "syt_nonsense", exitAuth, "login failed"},
		{"no homeserver", "", "alice", password, "", exitUsage, "--homeserver"},
		{"homeserver down", closed, "alice", password, "", exitUnavailable, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("SAMTAL_HOMESERVER", tc.homeserver)
			t.Setenv("SAMTAL_USER", tc.user)
			t.Setenv("SAMTAL_PASSWORD", tc.pass)
			t.Setenv("SAMTAL_ACCESS_TOKEN", tc.token)
			for _, args := range [][]string{{"login"}, {"room", "create"}} {
				r := samtal(t, nil, args...)
				if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
					t.Errorf("samtal %q: exit %d, stderr %q; want exit %d and %q", args, r.code, r.stderr, tc.code, tc.want)
				}
			}
		})
	}
}

// TestExitCode maps the errors that commands return to exit codes.
func TestExitCode(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		err  error
		code int
	}{
		{errors.New("disk full"), exitFail},
		{fmt.Errorf("%w: bad flag", errUsage), exitUsage},
		{fmt.Errorf("send: %w", matrix.ErrInvalidRoom), exitUsage},
		{&matrix.HTTPError{Status: 404, ErrCode: "M_NOT_FOUND"}, exitNotFound},
		{&matrix.HTTPError{Status: 401, ErrCode: "M_UNKNOWN_TOKEN"}, exitAuth},
		{fmt.Errorf("%w: m.login.password: %w", matrix.ErrLogin, &matrix.HTTPError{Status: 403, ErrCode: "M_FORBIDDEN"}), exitAuth},
		{fmt.Errorf("%w: m.login.password: %w", matrix.ErrLogin, refused), exitUnavailable},
		{&matrix.HTTPError{Status: 429, ErrCode: "M_LIMIT_EXCEEDED"}, exitUnavailable},
		{&matrix.SendError{ID: 1, Err: &matrix.HTTPError{Status: 502}}, exitUnavailable},
		{&matrix.HTTPError{Status: 403, ErrCode: "M_FORBIDDEN"}, exitFail},
		{fmt.Errorf("%w: not sent in time", errUnavailable), exitUnavailable},
		{refused, exitUnavailable},
		{context.Canceled, exitFail},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// TestSendServerDown: with the homeserver gone, send fails with exit 5 (unavailable), whether
// the session check or the send itself notices first.
func TestSendServerDown(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	room := mustSamtal(t, "room", "create", "--unencrypted")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	r := samtal(t, nil, "send", "--timeout", "2s", room, "anyone there?")
	if r.code != exitUnavailable || !(strings.Contains(r.stderr, "within 2s") || strings.Contains(r.stderr, "connection refused")) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
