package matrix_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRoomPresets creates a room of each preset and checks, as the invited user sees it once
// joined, what the preset promises.
func TestRoomPresets(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	off := false

	for _, tc := range []struct {
		name       string
		spec       matrix.RoomSpec
		joinRule   event.JoinRule
		history    event.HistoryVisibility
		encrypted  bool
		bobLevel   int
		directMark bool // bob's invite is marked as direct
	}{
		{
			name:     "PrivateChat",
			spec:     matrix.RoomSpec{Name: "Team", Topic: "Daily work", PowerLevels: map[id.UserID]matrix.PowerLevel{bob.UserID: matrix.PowerModerator}},
			joinRule: event.JoinRuleInvite, history: event.HistoryVisibilityShared, encrypted: true, bobLevel: 50,
		},
		{
			name:     "PublicRoom",
			spec:     matrix.RoomSpec{Preset: matrix.PublicRoom, Name: "Town hall", Alias: "town-hall"},
			joinRule: event.JoinRulePublic, history: event.HistoryVisibilityJoined, encrypted: false,
		},
		{
			name:     "DirectChat",
			spec:     matrix.RoomSpec{Preset: matrix.DirectChat},
			joinRule: event.JoinRuleInvite, history: event.HistoryVisibilityShared, encrypted: true, bobLevel: 100, directMark: true,
		},
		{
			name:     "CaseRoom",
			spec:     matrix.RoomSpec{Preset: matrix.CaseRoom, Name: "Case 4711", CaseID: "4711", Encrypted: &off},
			joinRule: event.JoinRuleInvite, history: event.HistoryVisibilityShared, encrypted: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			spec := tc.spec
			if tc.joinRule == event.JoinRuleInvite {
				spec.Invite = []id.UserID{bob.UserID, alice.UserID()} // the creator is skipped
			}
			room, err := alice.CreateRoom(ctx, spec)
			if err != nil {
				t.Fatalf("CreateRoom: %v", err)
			}

			if tc.joinRule == event.JoinRuleInvite {
				invite := waitInvite(t, bob, room)
				if direct := invite.Content.AsMember().IsDirect; direct != tc.directMark {
					t.Errorf("invite is_direct = %v, want %v", direct, tc.directMark)
				}
			}
			if _, err := bob.JoinRoom(ctx, room.String(), nil); err != nil {
				t.Fatalf("bob joins: %v", err)
			}
			state, err := bob.State(ctx, room)
			if err != nil {
				t.Fatalf("bob reads the room's state: %v", err)
			}

			if got := stateOf(state, event.StateJoinRules, "").Content.AsJoinRules().JoinRule; got != tc.joinRule {
				t.Errorf("join rule = %q, want %q", got, tc.joinRule)
			}
			if got := stateOf(state, event.StateHistoryVisibility, "").Content.AsHistoryVisibility().HistoryVisibility; got != tc.history {
				t.Errorf("history visibility = %q, want %q", got, tc.history)
			}
			if enc := stateOf(state, event.StateEncryption, ""); (enc != nil) != tc.encrypted {
				t.Errorf("encrypted = %v, want %v", enc != nil, tc.encrypted)
			} else if enc != nil && enc.Content.AsEncryption().Algorithm != id.AlgorithmMegolmV1 {
				t.Errorf("encryption algorithm = %q", enc.Content.AsEncryption().Algorithm)
			}
			if got := contentOf(state, event.StateRoomName, "")["name"]; spec.Name != "" && got != spec.Name {
				t.Errorf("name = %v, want %q", got, spec.Name)
			}
			if got := contentOf(state, event.StateTopic, "")["topic"]; spec.Topic != "" && got != spec.Topic {
				t.Errorf("topic = %v, want %q", got, spec.Topic)
			}
			pl := stateOf(state, event.StatePowerLevels, "").Content.AsPowerLevels()
			if got := pl.GetUserLevel(alice.UserID()); got != 100 {
				t.Errorf("creator's power level = %d, want 100", got)
			}
			if got := pl.GetUserLevel(bob.UserID); got != tc.bobLevel {
				t.Errorf("bob's power level = %d, want %d", got, tc.bobLevel)
			}
			if got := contentOf(state, matrix.StateCase, "")["case_id"]; got != nilIfEmpty(spec.CaseID) {
				t.Errorf("case_id = %v, want %q", got, spec.CaseID)
			}
			if spec.Alias != "" {
				alias := id.NewRoomAlias(spec.Alias, srv.ServerName)
				if got, err := alice.ResolveAlias(ctx, alias); err != nil || got != room {
					t.Errorf("ResolveAlias(%s) = %s, %v; want %s", alias, got, err, room)
				}
				if got := contentOf(state, event.StateCanonicalAlias, "")["alias"]; got != string(alias) {
					t.Errorf("canonical alias = %v, want %s", got, alias)
				}
			}
		})
	}
}

// TestRoomMembership walks a member through invite, join, moderator rights, kick, ban and
// unban, and the owner through leaving.
func TestRoomMembership(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := newClient(t, srv, "bob")
	bobID := bob.UserID()
	ctx := t.Context()

	room, err := alice.CreateRoom(ctx, matrix.RoomSpec{Name: "Membership"})
	if err != nil {
		t.Fatal(err)
	}
	membership := func() event.Membership {
		t.Helper()
		var m event.MemberEventContent
		if err := alice.Mautrix().StateEvent(ctx, room, event.StateMember, bobID.String(), &m); err != nil {
			t.Fatalf("read bob's membership: %v", err)
		}
		return m.Membership
	}

	if err := alice.Invite(ctx, room, bobID); err != nil {
		t.Fatalf("Invite: %v", err)
	}
	if got, err := bob.Join(ctx, room.String()); err != nil || got != room {
		t.Fatalf("Join = %s, %v; want %s", got, err, room)
	}
	if err := alice.SetPowerLevel(ctx, room, bobID, matrix.PowerModerator); err != nil {
		t.Fatalf("SetPowerLevel: %v", err)
	}
	if err := alice.Kick(ctx, room, bobID, "reorganisation"); err != nil {
		t.Fatalf("Kick: %v", err)
	}
	if got := membership(); got != event.MembershipLeave {
		t.Errorf("after Kick bob is %q, want leave", got)
	}
	if err := alice.Ban(ctx, room, bobID, "spam"); err != nil {
		t.Fatalf("Ban: %v", err)
	}
	if got := membership(); got != event.MembershipBan {
		t.Errorf("after Ban bob is %q, want ban", got)
	}
	if err := alice.Invite(ctx, room, bobID); !errors.Is(err, matrix.ErrForbidden) {
		t.Errorf("Invite of a banned user: %v, want ErrForbidden", err)
	}
	if err := alice.Unban(ctx, room, bobID); err != nil {
		t.Fatalf("Unban: %v", err)
	}
	if err := alice.Invite(ctx, room, bobID); err != nil {
		t.Errorf("Invite after Unban: %v", err)
	}

	if err := alice.Leave(ctx, room); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if slices.Contains(joinedRooms(t, alice.Mautrix()), room) {
		t.Error("alice still joined after Leave")
	}
}

// TestPowerLevels: SetPowerLevel changes one user's level and keeps the rest of the event.
func TestPowerLevels(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.UserID("bob")
	ctx := t.Context()
	room, err := alice.CreateRoom(ctx, matrix.RoomSpec{})
	if err != nil {
		t.Fatal(err)
	}
	levels := func() map[string]any {
		t.Helper()
		var content map[string]any
		if err := alice.Mautrix().StateEvent(ctx, room, event.StatePowerLevels, "", &content); err != nil {
			t.Fatal(err)
		}
		return content
	}
	before := levels()

	if err := alice.SetPowerLevel(ctx, room, bob, matrix.PowerModerator); err != nil {
		t.Fatalf("SetPowerLevel: %v", err)
	}
	after := levels()
	if got := after["users"].(map[string]any)[bob.String()]; got != 50.0 {
		t.Errorf("bob's level = %v, want 50", got)
	}
	if after["events"] == nil || fmt.Sprint(after["events"]) != fmt.Sprint(before["events"]) {
		t.Errorf("events changed: %v, was %v", after["events"], before["events"])
	}

	// Back to the default: bob is no longer listed at all.
	if err := alice.SetPowerLevel(ctx, room, bob, matrix.PowerDefault); err != nil {
		t.Fatalf("SetPowerLevel: %v", err)
	}
	if _, listed := levels()["users"].(map[string]any)[bob.String()]; listed {
		t.Error("bob still listed after SetPowerLevel(PowerDefault)")
	}
}

// TestEnsureRoomRace: two processes, as two accounts with a database each, ensure the same
// case room at the same moment. Both must end up with the one room, and the loser must not
// keep the room it made and abandoned.
func TestEnsureRoomRace(t *testing.T) {
	srv := matrixtest.NewServer(t)
	clients := []*matrix.Client{newClient(t, srv, "worker1"), newClient(t, srv, "worker2")}
	mine := map[*matrix.Client][]id.RoomID{}

	for i := range 5 {
		alias := id.NewRoomAlias(fmt.Sprintf("case-%d", 4710+i), srv.ServerName)
		spec := matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: fmt.Sprint(4710 + i)}
		type result struct {
			room    id.RoomID
			created bool
			err     error
		}
		results := make([]result, len(clients))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for j, c := range clients {
			wg.Go(func() {
				<-start
				r := &results[j]
				r.room, r.created, r.err = c.EnsureRoom(t.Context(), alias, spec)
			})
		}
		close(start)
		wg.Wait()

		creators := 0
		for j, r := range results {
			if r.err != nil {
				t.Fatalf("%s: EnsureRoom by %s: %v", alias, clients[j].UserID(), r.err)
			}
			if r.created {
				creators++
				mine[clients[j]] = append(mine[clients[j]], r.room)
			}
		}
		if results[0].room != results[1].room {
			t.Errorf("%s: two rooms, %s and %s", alias, results[0].room, results[1].room)
		}
		if creators != 1 {
			t.Errorf("%s: %d callers say they created the room, want 1", alias, creators)
		}
		if got, err := clients[0].ResolveAlias(t.Context(), alias); err != nil || got != results[0].room {
			t.Errorf("%s resolves to %s, %v; want %s", alias, got, err, results[0].room)
		}
	}
	for _, c := range clients {
		joined := joinedRooms(t, c.Mautrix())
		slices.Sort(joined)
		want := slices.Sorted(slices.Values(mine[c]))
		if !slices.Equal(joined, want) {
			t.Errorf("%s is in %v, want only the rooms it created, %v", c.UserID(), joined, want)
		}
	}
}

// TestEnsureRoomOnce: the second EnsureRoom finds the room; the first has invited, published
// the alias and linked the space.
func TestEnsureRoomOnce(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	ctx := t.Context()
	space, err := alice.CreateSpace(ctx, matrix.RoomSpec{Name: "Building permits"})
	if err != nil {
		t.Fatal(err)
	}
	alias := id.NewRoomAlias("case-4711", srv.ServerName)
	spec := matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Name: "Case 4711", Invite: []id.UserID{bob.UserID}, Space: space}

	room, created, err := alice.EnsureRoom(ctx, alias, spec)
	if err != nil || !created {
		t.Fatalf("first EnsureRoom = %s, %v, %v; want a new room", room, created, err)
	}
	again, created, err := alice.EnsureRoom(ctx, alias, spec)
	if err != nil || created || again != room {
		t.Fatalf("second EnsureRoom = %s, %v, %v; want %s, false", again, created, err, room)
	}

	waitInvite(t, bob, room)
	var canonical event.CanonicalAliasEventContent
	if err := alice.Mautrix().StateEvent(ctx, room, event.StateCanonicalAlias, "", &canonical); err != nil || canonical.Alias != alias {
		t.Errorf("canonical alias = %q, %v; want %s", canonical.Alias, err, alias)
	}
	if children, err := alice.SpaceChildren(ctx, space); err != nil || !slices.Equal(children, []id.RoomID{room}) {
		t.Errorf("SpaceChildren = %v, %v; want [%s]", children, err, room)
	}
	// The room's creator account has one room there, not two.
	if n := len(joinedRooms(t, alice.Mautrix())); n != 2 { // the space and the case room
		t.Errorf("alice is in %d rooms, want 2", n)
	}
}

// TestRoomBadInput: malformed input is refused with a typed error before any request is
// made (the context is already cancelled, so a request would fail with context.Canceled).
func TestRoomBadInput(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.UserID("bob")
	good := id.RoomID("!room:" + srv.ServerName)
	here := func(local string) id.RoomAlias { return id.NewRoomAlias(local, srv.ServerName) }
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	on := true

	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"invite to an alias", func() error { return alice.Invite(ctx, "#room:localhost", bob) }, matrix.ErrInvalidRoom},
		{"kick from nothing", func() error { return alice.Kick(ctx, "", bob, "") }, matrix.ErrInvalidRoom},
		{"ban with a space in the ID", func() error { return alice.Ban(ctx, "!a b:localhost", bob, "") }, matrix.ErrInvalidRoom},
		{"leave a bare word", func() error { return alice.Leave(ctx, "room") }, matrix.ErrInvalidRoom},
		{"join a bare word", func() error { _, err := alice.Join(ctx, "room"); return err }, matrix.ErrInvalidRoom},
		{"join an alias without server", func() error { _, err := alice.Join(ctx, "#room"); return err }, matrix.ErrInvalidRoom},
		{"resolve an empty localpart", func() error { _, err := alice.ResolveAlias(ctx, "#:localhost"); return err }, matrix.ErrInvalidRoom},
		{"resolve with whitespace", func() error { _, err := alice.ResolveAlias(ctx, "#a b:localhost"); return err }, matrix.ErrInvalidRoom},
		{"resolve a bad server", func() error { _, err := alice.ResolveAlias(ctx, "#a:bad_server!"); return err }, matrix.ErrInvalidRoom},
		{"alias on another server", func() error { return alice.SetAlias(ctx, "#a:elsewhere.example", good) }, matrix.ErrInvalidRoom},
		{"alias for a bad room", func() error { return alice.SetAlias(ctx, here("a"), "a") }, matrix.ErrInvalidRoom},
		{"ensure on another server", func() error {
			_, _, err := alice.EnsureRoom(ctx, "#case-1:elsewhere.example", matrix.RoomSpec{})
			return err
		}, matrix.ErrInvalidRoom},
		{"ensure with capitals", func() error { _, _, err := alice.EnsureRoom(ctx, here("Case-1"), matrix.RoomSpec{}); return err }, matrix.ErrInvalidRoom},
		{"ensure with another spec alias", func() error {
			_, _, err := alice.EnsureRoom(ctx, here("case-1"), matrix.RoomSpec{Alias: "case-2"})
			return err
		}, matrix.ErrInvalidRoom},
		{"create with a colon in the alias", func() error { _, err := alice.CreateRoom(ctx, matrix.RoomSpec{Alias: "a:b"}); return err }, matrix.ErrInvalidRoom},
		{"create in a bad space", func() error { _, err := alice.CreateRoom(ctx, matrix.RoomSpec{Space: "space"}); return err }, matrix.ErrInvalidRoom},
		{"invite a bare name", func() error {
			_, err := alice.CreateRoom(ctx, matrix.RoomSpec{Invite: []id.UserID{"bob"}})
			return err
		}, matrix.ErrInvalidUserID},
		{"invite an empty localpart", func() error { return alice.Invite(ctx, good, "@:localhost") }, matrix.ErrInvalidUserID},
		{"power to a bad user", func() error {
			_, err := alice.CreateRoom(ctx, matrix.RoomSpec{PowerLevels: map[id.UserID]matrix.PowerLevel{"@bob": 50}})
			return err
		}, matrix.ErrInvalidUserID},
		{"kick a bad user", func() error { return alice.Kick(ctx, good, "@bob smith:localhost", "") }, matrix.ErrInvalidUserID},
		{"case room without case", func() error { _, err := alice.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom}); return err }, matrix.ErrInvalidContent},
		{"unknown preset", func() error { _, err := alice.CreateRoom(ctx, matrix.RoomSpec{Preset: 42}); return err }, matrix.ErrInvalidContent},
		{"encrypted space", func() error { _, err := alice.CreateSpace(ctx, matrix.RoomSpec{Encrypted: &on}); return err }, matrix.ErrInvalidContent},
		{"space children of an alias", func() error { _, err := alice.SpaceChildren(ctx, "#space:localhost"); return err }, matrix.ErrInvalidRoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) || errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want %v before any request", err, tc.want)
			}
		})
	}
}

// TestRoomServerRefusals: what the server refuses comes back as the sentinel to branch on.
func TestRoomServerRefusals(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	ctx := t.Context()

	if _, err := alice.ResolveAlias(ctx, id.NewRoomAlias("no-such-case", srv.ServerName)); !errors.Is(err, matrix.ErrNotFound) {
		t.Errorf("ResolveAlias of an unknown alias: %v, want ErrNotFound", err)
	}
	var he *matrix.HTTPError
	if _, err := alice.ResolveAlias(ctx, id.NewRoomAlias("no-such-case", srv.ServerName)); !errors.As(err, &he) || he.Status != 404 {
		t.Errorf("ResolveAlias error %v is not an *HTTPError with status 404", err)
	}

	theirs, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Kick(ctx, theirs.RoomID, bob.UserID, ""); !errors.Is(err, matrix.ErrForbidden) {
		t.Errorf("Kick in a room alice is not in: %v, want ErrForbidden", err)
	}
	if _, err := alice.Join(ctx, theirs.RoomID.String()); !errors.Is(err, matrix.ErrForbidden) {
		t.Errorf("Join of an invite-only room: %v, want ErrForbidden", err)
	}

	// An alias someone else holds cannot be taken over.
	alias := id.NewRoomAlias("taken", srv.ServerName)
	if _, err := bob.CreateAlias(ctx, alias, theirs.RoomID); err != nil {
		t.Fatal(err)
	}
	mine, err := alice.CreateRoom(ctx, matrix.RoomSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAlias(ctx, alias, mine); !errors.As(err, &he) || he.Status/100 != 4 {
		t.Errorf("SetAlias of a taken alias: %v, want an *HTTPError 4xx", err)
	}
	if got, err := alice.ResolveAlias(ctx, alias); err != nil || got != theirs.RoomID {
		t.Errorf("taken alias now resolves to %s, %v; want %s", got, err, theirs.RoomID)
	}
}

// waitInvite syncs as cli until it is invited to room, and returns its own m.room.member event
// from the invite state.
func waitInvite(t *testing.T, cli *mautrix.Client, room id.RoomID) *event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), matrixtest.WaitTimeout)
	defer cancel()
	since := ""
	for {
		resp, err := cli.SyncRequest(ctx, 5000, since, "", false, "")
		if err != nil {
			t.Fatalf("waiting for an invite to %s: %v", room, err)
		}
		since = resp.NextBatch
		if inv, ok := resp.Rooms.Invite[room]; ok {
			for _, evt := range inv.State.Events {
				_ = evt.Content.ParseRaw(evt.Type)
				if evt.Type == event.StateMember && evt.GetStateKey() == cli.UserID.String() {
					return evt
				}
			}
			t.Fatalf("invite to %s without the invitee's member event", room)
		}
	}
}

// stateOf returns one event from a room's state, or nil.
func stateOf(state mautrix.RoomStateMap, typ event.Type, key string) *event.Event {
	return state[typ][key]
}

// contentOf returns the raw content of one state event, or nil.
func contentOf(state mautrix.RoomStateMap, typ event.Type, key string) map[string]any {
	if evt := stateOf(state, typ, key); evt != nil {
		return evt.Content.Raw
	}
	return nil
}

// nilIfEmpty is s as a value from a JSON object: absent when empty.
func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// joinedRooms lists the rooms cli is joined to.
func joinedRooms(t *testing.T, cli *mautrix.Client) []id.RoomID {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := cli.JoinedRooms(ctx)
	if err != nil {
		t.Fatalf("joined rooms of %s: %v", cli.UserID, err)
	}
	return resp.JoinedRooms
}
