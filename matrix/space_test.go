package matrix_test

import (
	"slices"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSpace: an agency's space lists the rooms added to it, one created in it and one added
// later, and each room names the space as its parent.
func TestSpace(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	ctx := t.Context()

	space, err := alice.CreateSpace(ctx, matrix.RoomSpec{Name: "Building permits"})
	if err != nil {
		t.Fatalf("CreateSpace: %v", err)
	}
	state, err := alice.Mautrix().State(ctx, space)
	if err != nil {
		t.Fatal(err)
	}
	if typ := stateOf(state, event.StateCreate, "").Content.AsCreate().Type; typ != event.RoomTypeSpace {
		t.Errorf("space's create event has type %q, want %q", typ, event.RoomTypeSpace)
	}
	if stateOf(state, event.StateEncryption, "") != nil {
		t.Error("space is encrypted")
	}

	inside, err := alice.CreateRoom(ctx, matrix.RoomSpec{Name: "Case 1", Space: space})
	if err != nil {
		t.Fatalf("CreateRoom in a space: %v", err)
	}
	later, err := alice.CreateRoom(ctx, matrix.RoomSpec{Name: "Case 2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddToSpace(ctx, space, later); err != nil {
		t.Fatalf("AddToSpace: %v", err)
	}

	children, err := alice.SpaceChildren(ctx, space)
	if err != nil {
		t.Fatalf("SpaceChildren: %v", err)
	}
	slices.Sort(children)
	if want := slices.Sorted(slices.Values([]id.RoomID{inside, later})); !slices.Equal(children, want) {
		t.Errorf("SpaceChildren = %v, want %v", children, want)
	}
	for _, room := range []id.RoomID{inside, later} {
		var parent event.SpaceParentEventContent
		if err := alice.Mautrix().StateEvent(ctx, room, event.StateSpaceParent, space.String(), &parent); err != nil {
			t.Errorf("%s has no m.space.parent for %s: %v", room, space, err)
			continue
		}
		if !parent.Canonical || !slices.Equal(parent.Via, []string{srv.ServerName}) {
			t.Errorf("%s's parent = %+v, want canonical via %s", room, parent, srv.ServerName)
		}
	}

	// A child event without via removes the room from the space.
	if _, err := alice.Mautrix().SendStateEvent(ctx, space, event.StateSpaceChild, later.String(), struct{}{}); err != nil {
		t.Fatal(err)
	}
	if children, err := alice.SpaceChildren(ctx, space); err != nil || !slices.Equal(children, []id.RoomID{inside}) {
		t.Errorf("after removal SpaceChildren = %v, %v; want [%s]", children, err, inside)
	}
}
