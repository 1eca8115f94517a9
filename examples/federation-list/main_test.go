package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestFederationList signs a list naming the bot's server and another agency's, publishes and
// loads it, and creates a case room whose ACL allows those two servers only; a second run
// reuses the key in its file.
func TestFederationList(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "casebot")
	dir := t.TempDir()
	cfg := config{
		Homeserver: srv.URL, User: "casebot", Password: password, DB: filepath.Join(dir, "casebot.db"),
		KeyFile: filepath.Join(dir, "list.key"), Version: 1, Listen: "127.0.0.1:0", CaseID: "4711",
		Members: []federation.Member{
			{Name: "Our agency", OrgNumber: "202100-0001", Servers: []string{srv.ServerName}, EmailDomains: []string{"our.example"}, Contact: "ops@our.example"},
			{Name: "Other agency", OrgNumber: "202100-0002", Servers: []string{"matrix.other.example"}, EmailDomains: []string{"other.example"}, Contact: "ops@other.example"},
		},
		Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	var out bytes.Buffer
	cfg.Out = &out
	if err := run(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key file: %v, %v", fi, err)
	}
	var room id.RoomID
	for line := range strings.SplitSeq(out.String(), "\n") {
		if r, ok := strings.CutPrefix(line, "room: "); ok {
			room = id.RoomID(r)
		}
	}
	bot := srv.Client(t, "casebot")
	var acl map[string]any
	if err := bot.StateEvent(t.Context(), room, event.StateServerACL, "", &acl); err != nil {
		t.Fatalf("room %q has no ACL: %v\n%s", room, err, out.String())
	}
	if got := acl["allow"]; len(got.([]any)) != 2 || acl["allow_ip_literals"] != false {
		t.Errorf("ACL %v", acl)
	}

	pub, _ := os.ReadFile(cfg.KeyFile + ".pub")
	cfg.Version, cfg.CaseID, cfg.Out = 2, "4712", &bytes.Buffer{}
	if err := run(t.Context(), cfg); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if again, _ := os.ReadFile(cfg.KeyFile + ".pub"); !bytes.Equal(pub, again) {
		t.Error("the second run made a new key")
	}
}
