package main

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

func TestRoomCreate(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")

	var r roomResult
	out := mustSamtal(t, "room", "create", "--json", "--name", "Case 4711", "--topic", "Building permit",
		"--alias", "case-4711", "--case", "4711", "--invite", string(bob.UserID))
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	if r.Alias != id.RoomAlias("#case-4711:"+srv.ServerName) {
		t.Errorf("alias %q", r.Alias)
	}
	if _, err := bob.JoinRoomByID(t.Context(), r.RoomID); err != nil {
		t.Fatalf("bob was not invited: %v", err)
	}
	name := matrixtest.WaitEvent(t, bob, r.RoomID, func(e *event.Event) bool { return e.Type == event.StateRoomName })
	if got := name.Content.AsRoomName().Name; got != "Case 4711" {
		t.Errorf("name %q", got)
	}
	caseEvt := matrixtest.WaitEvent(t, bob, r.RoomID, func(e *event.Event) bool { return e.Type.Type == matrix.StateCase.Type })
	if caseEvt.Content.Raw["case_id"] != "4711" {
		t.Errorf("case state %v", caseEvt.Content.Raw)
	}
	resolved, err := bob.ResolveAlias(t.Context(), r.Alias)
	if err != nil || resolved.RoomID != r.RoomID {
		t.Errorf("alias resolves to %v, %v", resolved, err)
	}
}

// TestRoomEnsure ensures the same alias twice: one room, created by the first call only.
func TestRoomEnsure(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	alias := "#case-17:" + srv.ServerName

	first := strings.Fields(mustSamtal(t, "room", "ensure", alias, "--case", "17", "--name", "Case 17"))
	if len(first) != 2 || first[1] != "created" {
		t.Fatalf("first ensure printed %q", first)
	}
	var second roomResult
	if err := json.Unmarshal([]byte(mustSamtal(t, "room", "ensure", "--json", alias)), &second); err != nil {
		t.Fatal(err)
	}
	if string(second.RoomID) != first[0] || second.Created == nil || *second.Created {
		t.Errorf("second ensure: %+v, first %q", second, first)
	}
}

// TestRoomInviteJoin: alice invites bob with `room invite`; bob invites alice to his room and
// she joins it with `room join`.
func TestRoomInviteJoin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	carol := srv.Client(t, "carol")

	room := mustSamtal(t, "room", "create", "--alias", "team")
	mustSamtal(t, "room", "invite", "#team:"+srv.ServerName, string(bob.UserID), string(carol.UserID))
	for _, cli := range []*mautrix.Client{bob, carol} {
		if _, err := cli.JoinRoomByID(t.Context(), id.RoomID(room)); err != nil {
			t.Errorf("%s could not join: %v", cli.UserID, err)
		}
	}

	bobs, err := bob.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice}})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustSamtal(t, "room", "join", string(bobs.RoomID)); got != string(bobs.RoomID) {
		t.Errorf("join printed %q", got)
	}
	if out := mustSamtal(t, "send", string(bobs.RoomID), "thanks"); !strings.HasPrefix(out, "$") {
		t.Errorf("send after join printed %q", out)
	}
}
