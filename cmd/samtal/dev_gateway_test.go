package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestDevMail starts `samtal dev`, runs the swaks line it prints, word for word, and the mail
// arrives in the demo room as the demo user sees it; a second run on the same folder keeps
// the room and the demo user's password (in a file only its owner reads), with the
// homeserver's data in a -homeserver-dir of its own.
func TestDevMail(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("swaks is not installed: run the tests through scripts/test.sh, which installs it (apt-get install swaks)")
	}
	dir := t.TempDir()
	hsDir := t.TempDir() // -homeserver-dir: the homeserver's data apart from the gateway's
	port := freePort(t)
	var room, password string
	for i := range 2 {
		e, out, errOut := testEnv()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, e, []string{"dev", "-dir", dir, "-homeserver-dir", hsDir, "-port", strconv.Itoa(port), "-smtp-port", strconv.Itoa(freePort(t))})
		}()
		waitFor(t, func() bool { return strings.Contains(out.String(), "swaks ") }, done, errOut)
		printed := out.String()
		line := regexp.MustCompile(`(?m)^\s+(swaks .*)$`).FindStringSubmatch(printed)[1]
		r := regexp.MustCompile(`-> room (\S+)`).FindStringSubmatch(printed)[1]
		if i == 1 && r != room {
			t.Errorf("second run made room %s, first %s", r, room)
		}
		room = r
		pw := regexp.MustCompile(`password\s+(\S+)`).FindStringSubmatch(printed)[1]
		if i == 1 && pw != password {
			t.Errorf("second run printed another demo password")
		}
		password = pw

		subject := "Case 4711"
		if i == 1 { // the same mail again would be a new one (no Message-ID): say which run
			line += " --header 'Subject: Case 4711 again'"
			subject = "Case 4711 again"
		}
		if out, err := exec.CommandContext(t.Context(), "sh", "-c", line).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		demo, _ := mautrix.NewClient("http://127.0.0.1:"+strconv.Itoa(port), "", "")
		if _, err := demo.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "demo"}}); err != nil {
			t.Fatal(err)
		}
		matrixtest.WaitEvent(t, demo, id.RoomID(room), func(e *event.Event) bool {
			body := e.Content.AsMessage().Body
			return e.Type == event.EventMessage && strings.Contains(body, "Subject: "+subject+"\n") && strings.Contains(body, "Decision made: approved")
		})
		cancel()
		if code := <-done; code != exitOK {
			t.Fatalf("run %d exited %d: %s", i, code, errOut)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "demo.password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("password file: %v, mode %v", err, fi.Mode())
	}
	// The homeserver kept its data in -homeserver-dir (the second run found the room there),
	// the gateway its database in -dir.
	if _, err := os.Stat(filepath.Join(hsDir, "dendrite.yaml")); err != nil {
		t.Errorf("homeserver data not in -homeserver-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "homeserver")); !os.IsNotExist(err) {
		t.Errorf("%s/homeserver exists with -homeserver-dir given (%v)", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gateway", "gateway.db")); err != nil {
		t.Errorf("gateway database not in -dir: %v", err)
	}
}

// TestReadmeSwaks: README.md's swaks line is the one `samtal dev` prints with its default
// ports, which TestDevMail runs.
func TestReadmeSwaks(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := devSwaksLine("127.0.0.1", "2525", "demo@"+devMailDomain); !strings.Contains(string(readme), "\n"+want+"\n") {
		t.Errorf("README.md lacks the line samtal dev prints:\n%s", want)
	}
}
