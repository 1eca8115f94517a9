package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// identityFile writes an identity configuration and points SAMTAL_IDENTITY at it.
func identityFile(t *testing.T, yaml string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "identity.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMTAL_IDENTITY", p)
}

func TestFindAndChat(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "officer")
	anna := srv.Client(t, "anna")
	dir := t.TempDir()
	people := filepath.Join(dir, "people.csv")
	if err := os.WriteFile(people, []byte("email,user_id\nanna.berg@agency-a.test,"+string(anna.UserID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	identityFile(t, "directory:\n  static: "+people+"\n")

	if got := mustSamtal(t, "find", "Anna.Berg@agency-a.test"); got != string(anna.UserID) {
		t.Fatalf("find = %q, want %s", got, anna.UserID)
	}
	if r := samtal(t, nil, "find", "nobody@agency-a.test"); r.code != exitNotFound {
		t.Fatalf("find of an unknown address: exit %d (%s), want %d", r.code, r.stderr, exitNotFound)
	}
	if r := samtal(t, nil, "find", "no-at-sign"); r.code != exitUsage {
		t.Fatalf("find without @: exit %d (%s), want %d", r.code, r.stderr, exitUsage)
	}

	room := mustSamtal(t, "chat", "anna.berg@agency-a.test", "hello", "Anna")
	if again := mustSamtal(t, "chat", "anna.berg@agency-a.test", "second message"); again != room {
		t.Fatalf("second chat went to %s, want %s", again, room)
	}
	var m event.MemberEventContent
	if err := anna.StateEvent(t.Context(), id.RoomID(room), event.StateMember, string(anna.UserID), &m); err != nil || m.Membership != event.MembershipInvite {
		t.Fatalf("anna in the chat: %v, %v; want invited", m.Membership, err)
	}
}

func TestOffboardCLI(t *testing.T) {
	srv := matrixtest.NewServer(t)
	me := loginAs(t, srv, "svc")
	anna, bo := srv.Client(t, "anna"), srv.Client(t, "bo")
	room := id.RoomID(mustSamtal(t, "room", "create", "--unencrypted", "--invite", string(anna.UserID), "--invite", string(bo.UserID)))
	if _, err := anna.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	if _, err := bo.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	roster := filepath.Join(t.TempDir(), "roster.yaml")
	if err := os.WriteFile(roster, []byte(fmt.Sprintf("people:\n  - {user_id: %q, active: false, reason: left 2026-11-30}\n  - {user_id: %q, active: true}\n  - {user_id: %q, active: true}\n",
		anna.UserID, bo.UserID, me)), 0o600); err != nil {
		t.Fatal(err)
	}
	identityFile(t, fmt.Sprintf("offboarding:\n  rooms: [%q]\n  roster: %s\n  max_remove_percent: 50\n", room, roster))

	plan := mustSamtal(t, "offboard", "--dry-run")
	if !strings.Contains(plan, "kick") || !strings.Contains(plan, string(anna.UserID)) || strings.Contains(plan, string(bo.UserID)) {
		t.Fatalf("dry run:\n%s", plan)
	}
	if got := mustSamtal(t, "offboard", "--dry-run", "--json"); !strings.Contains(got, `"leavers": [`) {
		t.Fatalf("dry run as JSON:\n%s", got)
	}
	membership := func(u id.UserID) event.Membership {
		var m event.MemberEventContent
		_ = bo.StateEvent(t.Context(), room, event.StateMember, string(u), &m)
		return m.Membership
	}
	if m := membership(anna.UserID); m != event.MembershipJoin {
		t.Fatalf("anna after a dry run: %s", m)
	}
	mustSamtal(t, "offboard", "--apply")
	if m := membership(anna.UserID); m != event.MembershipLeave {
		t.Fatalf("anna after --apply: %s, want leave", m)
	}
	if m := membership(bo.UserID); m != event.MembershipJoin {
		t.Fatalf("bo after --apply: %s, want join", m)
	}
	if got := mustSamtal(t, "offboard", "--dry-run"); !strings.Contains(got, "nothing to do") {
		t.Fatalf("second run:\n%s", got)
	}
	audit := mustSamtal(t, "audit")
	if !strings.Contains(audit, "kick") || !strings.Contains(audit, string(anna.UserID)) || !strings.Contains(audit, "left 2026-11-30") {
		t.Fatalf("audit:\n%s", audit)
	}

	// Over the limit: refused, exit 1, nothing removed.
	identityFile(t, fmt.Sprintf("offboarding:\n  rooms: [%q]\n  roster: %s\n  max_remove_percent: 1\n", room, roster))
	if err := os.WriteFile(roster, []byte(fmt.Sprintf("people:\n  - {user_id: %q, active: false}\n", bo.UserID)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := samtal(t, nil, "offboard", "--apply"); r.code != exitFail || !strings.Contains(r.stderr, "safety limit") {
		t.Fatalf("over the limit: exit %d, %s", r.code, r.stderr)
	}
	if m := membership(bo.UserID); m != event.MembershipJoin {
		t.Fatalf("bo after a refused run: %s, want join", m)
	}
}
