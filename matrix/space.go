package matrix

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// CreateSpace creates a space, a room that groups other rooms (an agency, a department, a
// case type), as spec describes, and returns its ID. A space is never encrypted: it holds no
// conversation, and clients must read its state to list its rooms. With spec.Space set, the
// new space becomes a subspace of that one.
func (c *Client) CreateSpace(ctx context.Context, spec RoomSpec) (id.RoomID, error) {
	if spec.Encrypted != nil && *spec.Encrypted {
		return "", fmt.Errorf("%w: a space cannot be encrypted", ErrInvalidContent)
	}
	req, err := c.createRequest(spec, true)
	if err != nil {
		return "", err
	}
	return c.create(ctx, req, spec.Space)
}

// AddToSpace lists child in space, and names space as child's canonical parent so that
// clients can show where the room belongs. The client needs the power to change the state of
// both rooms. Other servers are pointed to the client's own server to reach child.
func (c *Client) AddToSpace(ctx context.Context, space, child id.RoomID) error {
	if err := ValidateRoomID(space); err != nil {
		return err
	}
	if err := ValidateRoomID(child); err != nil {
		return err
	}
	via := []string{c.UserID().Homeserver()}
	if _, err := c.mx.SendStateEvent(ctx, space, event.StateSpaceChild, child.String(), &event.SpaceChildEventContent{Via: via}); err != nil {
		return fmt.Errorf("matrix: add %s to space %s: %w", child, space, wrapErr(err))
	}
	if _, err := c.mx.SendStateEvent(ctx, child, event.StateSpaceParent, space.String(), &event.SpaceParentEventContent{Via: via, Canonical: true}); err != nil {
		return fmt.Errorf("matrix: name %s as the space of %s: %w", space, child, wrapErr(err))
	}
	return nil
}

// SpaceChildren returns the rooms space lists, in the order clients show them: by their
// "order" key where they have one, then oldest first.
func (c *Client) SpaceChildren(ctx context.Context, space id.RoomID) ([]id.RoomID, error) {
	if err := ValidateRoomID(space); err != nil {
		return nil, err
	}
	state, err := c.mx.State(ctx, space)
	if err != nil {
		return nil, fmt.Errorf("matrix: read space %s: %w", space, wrapErr(err))
	}
	type child struct {
		room  id.RoomID
		order string
		ts    int64
	}
	var children []child
	for key, evt := range state[event.StateSpaceChild] {
		content := evt.Content.AsSpaceChild()
		// A child event without via is how a room is removed from a space.
		if len(content.Via) == 0 || ValidateRoomID(id.RoomID(key)) != nil {
			continue
		}
		children = append(children, child{id.RoomID(key), validOrder(content.Order), evt.Timestamp})
	}
	slices.SortFunc(children, func(a, b child) int {
		// The spec sorts children with an order before those without.
		if (a.order == "") != (b.order == "") {
			if a.order == "" {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.ts, b.ts), cmp.Compare(a.room, b.room))
	})
	rooms := make([]id.RoomID, len(children))
	for i, ch := range children {
		rooms[i] = ch.room
	}
	return rooms, nil
}

// validOrder is a child's order key, or "" where the spec says to ignore it: longer than 50
// characters or outside printable ASCII.
func validOrder(order string) string {
	if len(order) > 50 {
		return ""
	}
	for i := 0; i < len(order); i++ {
		if order[i] < 0x20 || order[i] > 0x7e {
			return ""
		}
	}
	return order
}
