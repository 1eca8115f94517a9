package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/samtalhq/samtal/internal/logtest"
)

// syncBuffer is a buffer that a running command may write while the test reads it.
type syncBuffer = logtest.Buffer

func testEnv() (*env, *syncBuffer, *syncBuffer) {
	var out, errOut syncBuffer
	return &env{stdout: &out, stderr: &errOut, log: slog.New(slog.NewTextHandler(io.Discard, nil))}, &out, &errOut
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "Usage"},
		{[]string{"nonsense"}, exitUsage, `unknown command "nonsense"`},
		{[]string{"dev", "-port", "99999"}, exitUsage, "not a TCP port"},
		{[]string{"dev", "-bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"dev", "extra"}, exitUsage, "unexpected arguments"},
		{[]string{"help"}, exitOK, "Commands:"},
	} {
		e, _, errOut := testEnv()
		if code := run(t.Context(), e, tc.args); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("samtal %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// TestDev runs `samtal dev` twice on the same folder: the demo user it prints can log in, and
// the second run keeps the first one's data.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: TestDevMail also runs samtal dev twice on one folder and logs in as the demo user (about 4 s)")
	}
	dir := t.TempDir()
	port := freePort(t)
	var password string
	for i := range 2 {
		e, out, errOut := testEnv()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int)
		go func() { done <- run(ctx, e, []string{"dev", "-dir", dir, "-port", strconv.Itoa(port)}) }()
		url := "http://127.0.0.1:" + strconv.Itoa(port)
		waitFor(t, func() bool { return strings.Contains(out.String(), "password") }, done, errOut)

		m := regexp.MustCompile(`password\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil || !strings.Contains(out.String(), url) {
			t.Fatalf("run %d printed no login details:\n%s", i, out)
		}
		if i == 1 && m[1] != password {
			t.Errorf("second run printed password %q, first %q", m[1], password)
		}
		password = m[1]
		cli, _ := mautrix.NewClient(url, "", "")
		if _, err := cli.Login(t.Context(), &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "demo"},
			Password:   password,
		}); err != nil {
			t.Fatalf("run %d: demo login: %v", i, err)
		}
		cancel()
		if code := <-done; code != exitOK {
			t.Fatalf("run %d exited %d: %s", i, code, errOut)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "demo.password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("password file: %v, mode %v", err, fi.Mode())
	}
}

func TestDevPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e, _, errOut := testEnv()
	code := run(t.Context(), e, []string{"dev", "-dir", t.TempDir(), "-port", strconv.Itoa(l.Addr().(*net.TCPAddr).Port)})
	if code != exitFail || !strings.Contains(errOut.String(), "in use") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, cond func() bool, done <-chan int, errOut *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		select {
		case code := <-done:
			t.Fatalf("exited %d early: %s", code, errOut)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// TestDevUserAdd adds users to a running `samtal dev` from another command; they can log in,
// and adding one again gives the same password.
func TestDevUserAdd(t *testing.T) {
	dir := t.TempDir()
	if r := samtal(t, nil, "dev", "user", "add", "-dir", dir, "anna"); r.code != exitUnavailable || !strings.Contains(r.stderr, "no samtal dev is running") {
		t.Errorf("without a running dev: exit %d, %q", r.code, r.stderr)
	}
	e, out, errOut := testEnv()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"dev", "-dir", dir, "-port", strconv.Itoa(freePort(t))}) }()
	waitFor(t, func() bool { return strings.Contains(out.String(), "admin") }, done, errOut)
	url := regexp.MustCompile(`(?m)^\s+homeserver\s+(\S+)`).FindStringSubmatch(out.String())[1]

	var password string
	for i := range 2 {
		var u devUser
		if err := json.Unmarshal([]byte(mustSamtal(t, "dev", "user", "add", "anna", "-dir", dir, "--json")), &u); err != nil {
			t.Fatal(err)
		}
		if i == 1 && u.Password != password {
			t.Errorf("adding anna again changed her password")
		}
		password = u.Password
		if !strings.HasPrefix(string(u.UserID), "@anna:") {
			t.Errorf("added %s", u.UserID)
		}
	}
	cli, _ := mautrix.NewClient(url, "", "")
	if _, err := cli.Login(t.Context(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "anna"},
		Password:   password,
	}); err != nil {
		t.Fatalf("anna cannot log in: %v", err)
	}
	if got := mustSamtal(t, "dev", "-dir", dir, "user", "add", "bo"); !strings.Contains(got, "@bo:") {
		t.Errorf("dev -dir DIR user add bo printed %q", got)
	}
	if r := samtal(t, nil, "dev", "user", "add", "-dir", dir, "Not A Name"); r.code != exitUsage {
		t.Errorf("a bad name: exit %d, %q", r.code, r.stderr)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("dev exited %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, devAdminFile)); !os.IsNotExist(err) {
		t.Errorf("the admin file outlived samtal dev: %v", err)
	}
}
