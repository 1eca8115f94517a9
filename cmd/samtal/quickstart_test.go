package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestReadmeQuickStart runs the two commands README.md starts with, as a newcomer types them
// in the repository's root: the first (`go run ... dev`) until it says it runs, then logs in
// with the user and password it printed, sends README.md's swaks mail and sees it in the room,
// and stops it with Ctrl-C's signal; the second
// (`scripts/test.sh`) with arguments that keep it to one small package, since running the
// whole suite from inside it would recurse (CI runs it whole: .ci/run).
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds samtal and Dendrite's wrapper with go run and starts a homeserver; not in -short")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := snippet.Markdown(filepath.Join(root, "README.md"), "sh")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no sh block")
	}
	var lines [][]string
	for _, l := range strings.Split(blocks[0], "\n") {
		if w := shellWords(l); len(w) > 0 {
			lines = append(lines, w)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("README.md's first block has %d commands, want the two a newcomer needs: %q", len(lines), blocks[0])
	}
	run, test := lines[0], lines[1]
	if run[0] != "go" || !anyContains(run, "dev") || !anyContains(run, "goolm") {
		t.Fatalf("README.md's first command is %q, want `go run -tags goolm ./cmd/samtal dev ...`", run)
	}
	if test[0] != "scripts/test.sh" {
		t.Fatalf("README.md's second command is %q, want scripts/test.sh", test)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^scripts/test\.sh\b`).Match(ci) {
		t.Errorf(".ci/run does not run README.md's test command scripts/test.sh")
	}

	var mailLine string // README's swaks line, which mails the gateway `samtal dev` runs
	for _, b := range blocks[1:] {
		if l := strings.TrimSpace(b); strings.HasPrefix(l, "swaks ") && !strings.Contains(l, "\n") {
			mailLine = l
		}
	}
	if mailLine == "" {
		t.Fatal("README.md has no block with the swaks line for `samtal dev`")
	}
	t.Run("run", func(t *testing.T) { quickStartRun(t, root, run, mailLine) })
	t.Run("test", func(t *testing.T) {
		args := append(test[1:], "-count=1", "-run", "^TestDelay$", "./internal/backoff/")
		cmd := exec.Command(filepath.Join(root, test[0]), args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(test, " "), err, out)
		}
		if !strings.Contains(string(out), "ok") || !strings.Contains(string(out), "internal/backoff") {
			t.Fatalf("%s ran no test:\n%s", strings.Join(test, " "), out)
		}
	})
}

// quickStartRun runs README.md's first command in root until the homeserver says it runs, logs
// in as the user it printed, and sends README.md's mail with mailLine into the room it printed.
func quickStartRun(t *testing.T, root string, words []string, mailLine string) {
	dataDir := filepath.Join(root, ".samtal-dev") // the default -dir; git ignores it
	if _, err := os.Stat(dataDir); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	} // else: someone's development data, which the command continues with as designed

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, words[0], words[1:]...)
	cmd.Dir = root
	// Its own process group, so that the interrupt reaches `go run` and the program it runs,
	// as Ctrl-C in a terminal does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	printed := make(chan map[string]string, 1)
	go func() {
		fields := map[string]string{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 {
				fields[f[0]] = f[len(f)-1]
			}
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "swaks ") {
				printed <- fields
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()

	var fields map[string]string
	select {
	case fields = <-printed:
	case err := <-exited:
		if strings.Contains(stderr.String(), "port 8008 is in use") {
			t.Skip("port 8008 is in use on this machine (a `samtal dev` running?); the command as written cannot start")
		}
		t.Fatalf("%s exited before it said it runs: %v\n%s", strings.Join(words, " "), err, stderr.String())
	case <-ctx.Done():
		t.Fatalf("%s did not say it runs in time\n%s", strings.Join(words, " "), stderr.String())
	}

	// What it printed is enough to log in as the demo user.
	mx, err := mautrix.NewClient(fields["homeserver"], "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := mx.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: fields["user"]},
		Password:         fields["password"],
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("log in with the user and password `samtal dev` printed: %v", err)
	}
	if resp.UserID != id.UserID(fields["user"]) {
		t.Errorf("logged in as %s, want the printed %s", resp.UserID, fields["user"])
	}

	// README.md's mail arrives in the room samtal dev made (fields["mail"] is its last word).
	if out, err := exec.CommandContext(ctx, "sh", "-c", mailLine).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", mailLine, err, out)
	}
	matrixtest.WaitEvent(t, mx, id.RoomID(fields["mail"]), func(e *event.Event) bool {
		return e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "Decision made: approved")
	})

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		// Not the exit status: `go run` itself ends with 1 after an interrupt, whatever the
		// program did. The program says it stopped, with no error, and leaves no homeserver.
		if !strings.Contains(stderr.String(), "stopping development homeserver") || strings.Contains(stderr.String(), "level=ERROR") {
			t.Errorf("after Ctrl-C, samtal dev did not stop cleanly:\n%s", stderr.String())
		}
		if _, err := mx.Versions(context.Background()); err == nil {
			t.Errorf("the homeserver at %s still answers after samtal dev ended", fields["homeserver"])
		}
	case <-time.After(time.Minute):
		t.Errorf("still running a minute after Ctrl-C")
	}
}

func anyContains(words []string, w string) bool {
	for _, x := range words {
		if strings.Contains(x, w) {
			return true
		}
	}
	return false
}
