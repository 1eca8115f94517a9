package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestLoginOAuthWithoutOAuthAPI: a homeserver without the OAuth 2.0 API (a test server that
// answers 404 to auth_metadata, as Synapse and Dendrite without MSC3861 do) gives a login
// error that says what to do instead. The OAuth flows themselves are tested in the identity
// package against a real OP.
func TestLoginOAuthWithoutOAuthAPI(t *testing.T) {
	clearEnv(t)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
	}))
	defer hs.Close()
	for _, flag := range []string{"--oauth", "--device"} {
		r := samtal(t, nil, "login", flag, "--homeserver", hs.URL)
		if r.code != exitAuth || !strings.Contains(r.stderr, "no OAuth 2.0 API") || !strings.Contains(r.stderr, "SAMTAL_PASSWORD") {
			t.Errorf("%s: exit %d, %s", flag, r.code, r.stderr)
		}
	}
	if r := samtal(t, nil, "login", "--oauth"); r.code != exitUsage {
		t.Errorf("without a homeserver: exit %d, %s", r.code, r.stderr)
	}
}

// TestLoginPasswordThroughTransport: a password session passes through the OAuth transport
// that every command's client now has, and logout still works.
func TestLoginPasswordThroughTransport(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "carol")
	if room := mustSamtal(t, "room", "create"); !strings.HasPrefix(room, "!") {
		t.Errorf("room create printed %q", room)
	}
	mustSamtal(t, "logout")
}

// TestLoginOAuthEndToEnd: 'samtal login --oauth' against a real OP (internal/oidctest) behind
// a test Matrix front (no homeserver with the OAuth 2.0 API runs on our machines; the front
// checks tokens at the OP's userinfo, which wants openid, and the OP gives refresh tokens for
// offline_access, hence the two --scope flags): the command
// prints the authorization URL and waits on its loopback listener; the user's browser (the
// test's HTTP client) signs in at the OP and comes back. The stored session is what the next
// commands use: a send, and, after the homeserver stopped taking the access token, another
// send that refreshes it on the way. The tokens are in the database, readable by its owner
// only.
func TestLoginOAuthEndToEnd(t *testing.T) {
	o, f := oauthEnv(t)
	out := loginInteractive(t, []string{"login", "--oauth", "--json", "--scope", "openid", "--scope", "offline_access"}, func(stderr string) bool {
		u := regexp.MustCompile(`http://\S+/auth\?\S+`).FindString(stderr)
		if u == "" {
			return false
		}
		if err := oidctest.Browse(u, "jane.smith"); err != nil {
			t.Errorf("browser: %v", err)
		}
		return true
	})
	var res loginResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.UserID != "@id-jane:front.test" || !res.New {
		t.Fatalf("login printed %q (%v)", out, err)
	}
	sendThroughCLI(t, f, "!case:front.test", "first, with the stored session")
	f.ExpireAll()
	sendThroughCLI(t, f, "!case:front.test", "second, after a refresh")
	if got := o.LastClientID(); got == "" {
		t.Error("no client was registered at the OP")
	}
	ownerOnly(t)
}

// TestLoginDeviceEndToEnd: 'samtal login --device' prints where to go and the code; the
// officer enters it at the OP from another device (the test's HTTP client), and the command
// ends logged in with a session the next command uses.
func TestLoginDeviceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("the example OP's device grant polls every 5 seconds")
	}
	o, f := oauthEnv(t)
	out := loginInteractive(t, []string{"login", "--device", "--scope", "openid", "--scope", "offline_access"}, func(stderr string) bool {
		m := regexp.MustCompile(`enter the code (\S+)`).FindStringSubmatch(stderr)
		if m == nil {
			return false
		}
		go func() {
			if err := o.ApproveDevice(m[1], "officer"); err != nil {
				t.Errorf("approve: %v", err)
			}
		}()
		return true
	})
	if !strings.Contains(out, "Logged in as @officer:front.test") {
		t.Fatalf("login printed %q", out)
	}
	sendThroughCLI(t, f, "!case:front.test", "from a headless tool")
	f.ExpireAll()
	sendThroughCLI(t, f, "!case:front.test", "after a refresh")
	ownerOnly(t)
}

// oauthEnv starts the OP and the front and points the environment at them. The front has no
// end-to-end encryption, and no browser is started.
func oauthEnv(t *testing.T) (*oidctest.OP, *oidctest.Front) {
	t.Helper()
	clearEnv(t)
	t.Setenv("SAMTAL_E2EE", "off")
	t.Setenv("SAMTAL_NO_BROWSER", "1")
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	t.Setenv("SAMTAL_HOMESERVER", f.URL)
	return o, f
}

// loginInteractive runs a login command until it waits for the user; act reads its stderr and
// does what the user does, returning true once it did. It returns the command's stdout.
func loginInteractive(t *testing.T, args []string, act func(stderr string) bool) string {
	t.Helper()
	e, out, errOut := testEnv()
	done := make(chan int, 1)
	go func() { done <- run(t.Context(), e, args) }()
	waitFor(t, func() bool { return act(errOut.String()) }, done, errOut)
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("samtal %q: exit %d\nstderr: %s", args, code, errOut)
		}
	case <-time.After(3 * time.Minute): // a guard against a hang, not a timing assert
		t.Fatalf("samtal %q did not finish: %s", args, errOut)
	}
	return strings.TrimSpace(out.String())
}

// sendThroughCLI sends text with 'samtal send' and checks that the front took it.
func sendThroughCLI(t *testing.T, f *oidctest.Front, room, text string) {
	t.Helper()
	mustSamtal(t, "send", room, text)
	got := f.SentBodies()
	if len(got) == 0 || !strings.Contains(got[len(got)-1], text) {
		t.Errorf("the front got %q, want %q last", got, text)
	}
}

// ownerOnly checks that the database with the tokens, and what SQLite keeps beside it, can be
// read by its owner only.
func ownerOnly(t *testing.T) {
	t.Helper()
	db := os.Getenv("SAMTAL_DB")
	for _, p := range []string{db, db + "-wal", db + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && p != db {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v: others can read the tokens", filepath.Base(p), fi.Mode().Perm())
		}
	}
}
