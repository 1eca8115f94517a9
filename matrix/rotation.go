package matrix

import (
	"context"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A Rotator is an Encryption that takes part in the removals this client makes itself (Kick,
// Ban, withdrawing an invite with Kick, Leave), so that whoever is removed cannot read what the
// client sends into the room afterwards. The e2ee package's Machine is one.
type Rotator interface {
	// Removal runs remove, the request that gives user the membership after (leave or ban) in
	// room, and makes sure that the client's next encrypted message in room uses a new room
	// key, shared only with those still in it. The current key is discarded durably before
	// remove runs, so a process that dies at any point still rotates; sends into room wait
	// until Removal returns.
	Removal(ctx context.Context, room id.RoomID, user id.UserID, after event.Membership, remove func(context.Context) error) error
}

// removal runs remove through the client's encryption when it rotates room keys, else as it is.
func (c *Client) removal(ctx context.Context, room id.RoomID, user id.UserID, after event.Membership, remove func(context.Context) error) error {
	if r, ok := c.encryption().(Rotator); ok {
		return r.Removal(ctx, room, user, after, remove)
	}
	return remove(ctx)
}
