package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestOffboardAdminConfig: offboarding.admin names the adapter; what the own server lacks for
// the asked actions shows in the dry run as MISSING (Dendrite has none of the spec's v1.18
// moderation endpoints); a configuration that cannot work is a usage error before any change.
func TestOffboardAdminConfig(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "svc")
	anna := srv.Client(t, "anna")
	room := id.RoomID(mustSamtal(t, "room", "create", "--unencrypted", "--invite", string(anna.UserID)))
	if _, err := anna.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	roster := filepath.Join(dir, "roster.yaml")
	if err := os.WriteFile(roster, []byte(fmt.Sprintf("people:\n  - {user_id: %q, active: false, reason: left}\n", anna.UserID)), 0o600); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("offboarding:\n  rooms: [%q]\n  roster: %s\n  max_remove_percent: 100\n", room, roster)

	identityFile(t, base+"  admin: moderation\n  lock: true\n")
	plan := mustSamtal(t, "offboard", "--dry-run")
	if !strings.Contains(plan, "MISSING") || !strings.Contains(plan, "m.account_moderation.lock") || !strings.Contains(plan, "kick") {
		t.Fatalf("dry run with the spec's moderation on Dendrite:\n%s", plan)
	}
	if got := mustSamtal(t, "offboard", "--dry-run", "--json"); !strings.Contains(got, `"missing": [`) {
		t.Fatalf("dry run as JSON:\n%s", got)
	}
	identityFile(t, base+"  admin: dendrite\n  deactivate: true\n")
	if plan := mustSamtal(t, "offboard", "--dry-run"); !strings.Contains(plan, "MISSING") || !strings.Contains(plan, "logout") {
		t.Fatalf("dry run with Dendrite asked to deactivate:\n%s", plan)
	}

	for name, extra := range map[string]string{
		"unknown admin":          "  admin: openfire\n",
		"mas without its client": "  admin: mas\n",
		"mas secret file absent": "  admin: mas\n  mas: {url: \"https://auth.test\", client_id: c, client_secret_file: " + filepath.Join(dir, "absent") + "}\n",
		"mas block, other admin": "  admin: synapse\n  mas: {url: \"https://auth.test\"}\n",
		"lock without an admin":  "  lock: true\n",
	} {
		identityFile(t, base+extra)
		if r := samtal(t, nil, "offboard", "--dry-run"); r.code != exitUsage {
			t.Errorf("%s: exit %d (%s), want %d", name, r.code, r.stderr, exitUsage)
		}
	}
}
