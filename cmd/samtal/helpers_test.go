package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// result is what one run of samtal left behind.
type result struct {
	code           int
	stdout, stderr string
}

// samtal runs the command line in-process, with stdin as standard input (nil: a terminal).
func samtal(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	e, out, errOut := testEnv()
	e.stdin = stdin
	code := run(t.Context(), e, args)
	return result{code, out.String(), errOut.String()}
}

// mustSamtal runs the command line and fails the test unless it succeeds; it returns stdout
// without its final newline.
func mustSamtal(t *testing.T, args ...string) string {
	t.Helper()
	return mustSamtalIn(t, nil, args...)
}

// mustSamtalIn is mustSamtal with standard input.
func mustSamtalIn(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	r := samtal(t, stdin, args...)
	if r.code != exitOK {
		t.Fatalf("samtal %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return strings.TrimSuffix(r.stdout, "\n")
}

// clearEnv gives the test an environment with no samtal account in it, and a database of its
// own, so that nothing from the machine running the tests leaks in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"SAMTAL_HOMESERVER", "SAMTAL_USER", "SAMTAL_PASSWORD", "SAMTAL_ACCESS_TOKEN", "SAMTAL_PICKLE_KEY_FILE", "SAMTAL_E2EE", "SAMTAL_RECOVERY_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("SAMTAL_DB", filepath.Join(t.TempDir(), "samtal.db"))
}

// loginAs registers localpart on srv, puts its credentials in the environment the way a user
// would, and runs `samtal login`. Later commands in the test act as that user.
func loginAs(t *testing.T, srv *matrixtest.Server, localpart string) id.UserID {
	t.Helper()
	return loginVia(t, srv, srv.URL, localpart)
}

// loginVia is loginAs with the CLI given hsURL as the homeserver: srv's own URL, or a proxy in
// front of it.
func loginVia(t *testing.T, srv *matrixtest.Server, hsURL, localpart string) id.UserID {
	t.Helper()
	clearEnv(t)
	user, password := srv.RegisterUser(t, localpart)
	t.Setenv("SAMTAL_HOMESERVER", hsURL)
	t.Setenv("SAMTAL_USER", localpart)
	t.Setenv("SAMTAL_PASSWORD", password)
	mustSamtal(t, "login")
	return user
}

// sharedRoom creates a room with the CLI's account, invites other to it, and has other join.
func sharedRoom(t *testing.T, other *mautrix.Client) id.RoomID {
	t.Helper()
	room := id.RoomID(mustSamtal(t, "room", "create", "--unencrypted", "--invite", string(other.UserID)))
	if _, err := other.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatalf("%s joins %s: %v", other.UserID, room, err)
	}
	return room
}

// waitEventID waits until cli sees the event with ID evt in room, and returns it.
func waitEventID(t *testing.T, cli *mautrix.Client, room id.RoomID, evt id.EventID) *event.Event {
	t.Helper()
	return matrixtest.WaitEvent(t, cli, room, func(e *event.Event) bool { return e.ID == evt })
}

// bodies returns the bodies of the last 100 messages in room, oldest first.
func bodies(t *testing.T, cli *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), matrixtest.WaitTimeout)
	defer cancel()
	resp, err := cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("read messages of %s: %v", room, err)
	}
	var out []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		if evt := resp.Chunk[i]; evt.Type == event.EventMessage {
			out = append(out, evt.Content.Raw["body"].(string))
		}
	}
	return out
}
