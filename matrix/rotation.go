package matrix

import (
	"context"
	"sync"

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

// removal runs remove through the client's encryption when it rotates room keys, else as it
// is. It holds the room's gate alone: an encrypted send that is under way (encrypted with the
// key the removed member holds, its request not yet answered) finishes first, so that no
// message encrypted before the removal lands after it.
func (c *Client) removal(ctx context.Context, room id.RoomID, user id.UserID, after event.Membership, remove func(context.Context) error) error {
	r, ok := c.encryption().(Rotator)
	if !ok {
		return remove(ctx)
	}
	g := c.gates.of(room)
	g.Lock()
	defer g.Unlock()
	return r.Removal(ctx, room, user, after, remove)
}

// roomGates keep encrypted sends into a room apart from removals from it: a send holds its
// room's gate shared from encryption until the homeserver answered, a removal holds it alone.
type roomGates struct {
	mu    sync.Mutex
	rooms map[id.RoomID]*sync.RWMutex
}

func (g *roomGates) of(room id.RoomID) *sync.RWMutex {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rooms == nil {
		g.rooms = map[id.RoomID]*sync.RWMutex{}
	}
	l := g.rooms[room]
	if l == nil {
		l = &sync.RWMutex{}
		g.rooms[room] = l
	}
	return l
}
