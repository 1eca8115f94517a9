package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestLogin logs in once with credentials from the environment; afterwards the database alone
// is enough, and logging in again keeps the stored device.
func TestLogin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	clearEnv(t)
	user, password := srv.RegisterUser(t, "alice")
	t.Setenv("SAMTAL_HOMESERVER", srv.URL)
	t.Setenv("SAMTAL_USER", "alice")
	t.Setenv("SAMTAL_PASSWORD", password)

	var first loginResult
	if err := json.Unmarshal([]byte(mustSamtal(t, "login", "--json")), &first); err != nil {
		t.Fatal(err)
	}
	if first.UserID != user || first.DeviceID == "" || !first.New || first.Session != "default" {
		t.Errorf("first login: %+v", first)
	}

	// Without the password and the homeserver, the stored session is all a command needs.
	t.Setenv("SAMTAL_HOMESERVER", "")
	t.Setenv("SAMTAL_PASSWORD", "")
	room := mustSamtal(t, "room", "create")
	if !strings.HasPrefix(room, "!") {
		t.Errorf("room create printed %q", room)
	}

	t.Setenv("SAMTAL_PASSWORD", password)
	out := mustSamtal(t, "login")
	if !strings.Contains(out, "Already logged in as "+string(user)+" on device "+string(first.DeviceID)) {
		t.Errorf("second login printed %q", out)
	}

	// Another user for the same session is refused; another session name takes it.
	_, bobPassword := srv.RegisterUser(t, "bob")
	t.Setenv("SAMTAL_USER", "bob")
	t.Setenv("SAMTAL_PASSWORD", bobPassword)
	t.Setenv("SAMTAL_HOMESERVER", srv.URL)
	if r := samtal(t, nil, "login"); r.code != exitFail || !strings.Contains(r.stderr, "samtal logout") {
		t.Errorf("login as bob over alice's session: exit %d, %s", r.code, r.stderr)
	}
	if out := mustSamtal(t, "login", "--session", "bob"); !strings.Contains(out, "Logged in as @bob:") {
		t.Errorf("login as bob: %q", out)
	}

	// Logout ends the session: the next command has none, and no credentials.
	mustSamtal(t, "logout")
	t.Setenv("SAMTAL_USER", "")
	t.Setenv("SAMTAL_PASSWORD", "")
	if r := samtal(t, nil, "room", "create"); r.code != exitAuth {
		t.Errorf("after logout: exit %d, %s", r.code, r.stderr)
	}
}

// TestLoginAccessToken logs in with a token issued elsewhere, and stores the database readable
// by its owner only.
func TestLoginAccessToken(t *testing.T) {
	srv := matrixtest.NewServer(t)
	clearEnv(t)
	cli := srv.Client(t, "carol")
	t.Setenv("SAMTAL_HOMESERVER", srv.URL)
	t.Setenv("SAMTAL_ACCESS_TOKEN", cli.AccessToken)
	out := mustSamtal(t, "login")
	if !strings.Contains(out, string(cli.UserID)) || !strings.Contains(out, string(cli.DeviceID)) {
		t.Errorf("login printed %q, want %s on %s", out, cli.UserID, cli.DeviceID)
	}
	fi, err := os.Stat(os.Getenv("SAMTAL_DB"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database: %v, mode %v", err, fi.Mode())
	}
}
