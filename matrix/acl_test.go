package matrix_test

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

func TestServerACLAllowsServer(t *testing.T) {
	acl := &matrix.ServerACL{Allow: []string{"matrix.a.example", "*.b.example", "c?.example"}, Deny: []string{"bad.b.example"}}
	for _, tc := range []struct {
		server string
		want   bool
	}{
		{"matrix.a.example", true},
		{"matrix.a.example:8448", true},
		{"MATRIX.A.example", true},
		{"evil-matrix.a.example", false}, // patterns match the whole name, not a part of it
		{"matrix.a.example.evil", false},
		{"x.b.example", true},
		{"bad.b.example", false},
		{"b.example", false},
		{"c1.example", true},
		{"c12.example", false},
		{"127.0.0.1", false},
		{"[::1]:8448", false},
		{"", false},
	} {
		if got := acl.AllowsServer(tc.server); got != tc.want {
			t.Errorf("AllowsServer(%q) = %v, want %v", tc.server, got, tc.want)
		}
	}
	ips := &matrix.ServerACL{Allow: []string{"*"}, AllowIPLiterals: true}
	if !ips.AllowsServer("10.0.0.1:8448") {
		t.Error("AllowIPLiterals with * refused an IP literal")
	}
}

// TestServerACLRoom: an ACL given in the RoomSpec, and one from the client's CaseRoomACL source,
// are in the room's state from its creation; SetServerACL replaces it; ACLs that would shut
// out the client's own server are refused before any request.
func TestServerACLRoom(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := context.Background()
	noE2EE := false
	members := &matrix.ServerACL{Allow: []string{srv.ServerName, "b.example"}, ManagedBy: "io.samtal.test"}
	calls := 0
	src := matrix.ServerACLFunc(func() (*matrix.ServerACL, error) { calls++; return members, nil })
	c := srv.NewClient(t, "clerk", matrixtest.WithLogger(quietLogger(t)), matrixtest.WithCaseRoomACL(src))
	raw := srv.Client(t, "clerk")

	// A case room without its own ACL gets the source's.
	room, err := c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Encrypted: &noE2EE})
	if err != nil {
		t.Fatal(err)
	}
	var content map[string]any
	if err := raw.StateEvent(ctx, room, event.StateServerACL, "", &content); err != nil {
		t.Fatalf("raw read of the ACL: %v", err)
	}
	if content["allow_ip_literals"] != false || content["io.samtal.managed_by"] != "io.samtal.test" {
		t.Errorf("ACL content %v", content)
	}
	got, err := c.ServerACL(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Allow) != 2 || got.Allow[0] != srv.ServerName || got.Allow[1] != "b.example" || got.ManagedBy != "io.samtal.test" || got.AllowIPLiterals {
		t.Errorf("ServerACL = %+v", got)
	}

	// Other presets are not touched by the source; a room has no ACL then.
	plain, err := c.CreateRoom(ctx, matrix.RoomSpec{Encrypted: &noE2EE})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("source asked %d times, want 1 (case rooms only)", calls)
	}
	if _, err := c.ServerACL(ctx, plain); !errors.Is(err, matrix.ErrNotFound) {
		t.Errorf("ServerACL of a room without one: %v, want ErrNotFound", err)
	}

	// An explicit ACL wins over the source's, for any preset.
	own, err := c.CreateRoom(ctx, matrix.RoomSpec{Encrypted: &noE2EE, ServerACL: &matrix.ServerACL{Allow: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.ServerACL(ctx, own); err != nil || len(got.Allow) != 1 || got.Allow[0] != "*" {
		t.Errorf("explicit ACL: %+v, %v", got, err)
	}

	// SetServerACL replaces it.
	if err := c.SetServerACL(ctx, room, matrix.ServerACL{Allow: []string{srv.ServerName, "c.example"}}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ServerACL(ctx, room); err != nil || len(got.Allow) != 2 || got.Allow[1] != "c.example" || got.ManagedBy != "" {
		t.Errorf("after SetServerACL: %+v, %v", got, err)
	}

	// Refused before any request: what would lock out our own server, empty, malformed.
	for name, acl := range map[string]matrix.ServerACL{
		"own server not allowed": {Allow: []string{"b.example"}},
		"own server denied":      {Allow: []string{"*"}, Deny: []string{srv.ServerName}},
		"nothing allowed":        {},
		"blank pattern":          {Allow: []string{srv.ServerName, ""}},
		"space in pattern":       {Allow: []string{srv.ServerName, "a b"}},
	} {
		if err := c.SetServerACL(ctx, room, acl); !errors.Is(err, matrix.ErrInvalidContent) {
			t.Errorf("%s: SetServerACL = %v, want ErrInvalidContent", name, err)
		}
		if _, err := c.CreateRoom(ctx, matrix.RoomSpec{Encrypted: &noE2EE, ServerACL: &acl}); !errors.Is(err, matrix.ErrInvalidContent) {
			t.Errorf("%s: CreateRoom = %v, want ErrInvalidContent", name, err)
		}
	}
}

// TestCaseRoomACLSourceFails: when the ACL source cannot say (no federation list yet), no case
// room is created rather than one open to every server.
func TestCaseRoomACLSourceFails(t *testing.T) {
	srv := matrixtest.NewServer(t)
	noList := errors.New("no federation list")
	src := matrix.ServerACLFunc(func() (*matrix.ServerACL, error) { return nil, noList })
	c := srv.NewClient(t, "clerk", matrixtest.WithLogger(quietLogger(t)), matrixtest.WithCaseRoomACL(src))
	noE2EE := false
	_, err := c.CreateRoom(context.Background(), matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "1", Encrypted: &noE2EE})
	if !errors.Is(err, noList) {
		t.Fatalf("CreateRoom = %v, want the source's error", err)
	}
	rooms, err := c.Mautrix().JoinedRooms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rooms.JoinedRooms) != 0 {
		t.Errorf("a room was created: %v", rooms.JoinedRooms)
	}
}
