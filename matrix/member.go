package matrix

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SetPowerLevel gives user level in room. It reads the room's power levels and writes them
// back with the one change, keeping what this package does not know about; two changes at the
// same time can overwrite each other.
func (c *Client) SetPowerLevel(ctx context.Context, room id.RoomID, user id.UserID, level PowerLevel) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	var content map[string]any
	if err := c.mx.StateEvent(ctx, room, event.StatePowerLevels, "", &content); err != nil {
		return fmt.Errorf("matrix: read power levels of %s: %w", room, wrapErr(err))
	}
	if content == nil {
		content = map[string]any{}
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	// A user not listed has users_default; leaving them out keeps the event small.
	if def, _ := content["users_default"].(float64); float64(level) == def {
		delete(users, string(user))
	} else {
		users[string(user)] = int(level)
	}
	content["users"] = users
	if _, err := c.mx.SendStateEvent(ctx, room, event.StatePowerLevels, "", content); err != nil {
		return fmt.Errorf("matrix: set power level of %s in %s to %d: %w", user, room, level, wrapErr(err))
	}
	return nil
}

// Invite invites user to room.
func (c *Client) Invite(ctx context.Context, room id.RoomID, user id.UserID) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: user}); err != nil {
		return fmt.Errorf("matrix: invite %s to %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Kick removes user from room, or withdraws their invite; they may come back if invited or if
// the room is public. reason is shown to them and to the room; it may be empty.
//
// In an encrypted room, the client's next message uses a new room key that user's devices do
// not get (see Rotator); this holds even if the process dies right after Kick returned.
func (c *Client) Kick(ctx context.Context, room id.RoomID, user id.UserID, reason string) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	return c.removal(ctx, room, user, event.MembershipLeave, func(ctx context.Context) error {
		if _, err := c.mx.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: user, Reason: reason}); err != nil {
			return fmt.Errorf("matrix: kick %s from %s: %w", user, room, wrapErr(err))
		}
		return nil
	})
}

// Ban removes user from room and keeps them out until Unban. reason is shown to them and to
// the room; it may be empty. In an encrypted room, the next message uses a new room key, as
// after Kick.
func (c *Client) Ban(ctx context.Context, room id.RoomID, user id.UserID, reason string) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	return c.removal(ctx, room, user, event.MembershipBan, func(ctx context.Context) error {
		if _, err := c.mx.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: user, Reason: reason}); err != nil {
			return fmt.Errorf("matrix: ban %s from %s: %w", user, room, wrapErr(err))
		}
		return nil
	})
}

// Unban lifts a ban; user may then be invited again.
func (c *Client) Unban(ctx context.Context, room id.RoomID, user id.UserID) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: user}); err != nil {
		return fmt.Errorf("matrix: unban %s in %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Leave leaves room (or declines its invite) and forgets it, so that it no longer appears in
// the account's history. The room key this client used there is discarded: should it come
// back, it starts a new one.
func (c *Client) Leave(ctx context.Context, room id.RoomID) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	err := c.removal(ctx, room, c.UserID(), event.MembershipLeave, func(ctx context.Context) error {
		if _, err := c.mx.LeaveRoom(ctx, room); err != nil {
			return fmt.Errorf("matrix: leave %s: %w", room, wrapErr(err))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := c.mx.ForgetRoom(ctx, room); err != nil {
		return fmt.Errorf("matrix: forget %s: %w", room, wrapErr(err))
	}
	return nil
}

// Join joins a room by ID ("!abc:example.se") or alias ("#case-4711:example.se"), or accepts
// its invite, and returns the room's ID.
func (c *Client) Join(ctx context.Context, roomIDOrAlias string) (id.RoomID, error) {
	var err error
	switch {
	case strings.HasPrefix(roomIDOrAlias, "!"):
		err = ValidateRoomID(id.RoomID(roomIDOrAlias))
	case strings.HasPrefix(roomIDOrAlias, "#"):
		err = ValidateAlias(id.RoomAlias(roomIDOrAlias))
	default:
		err = fmt.Errorf("%w: %q is neither a room ID (!...) nor an alias (#...)", ErrInvalidRoom, roomIDOrAlias)
	}
	if err != nil {
		return "", err
	}
	resp, err := c.mx.JoinRoom(ctx, roomIDOrAlias, nil)
	if err != nil {
		return "", fmt.Errorf("matrix: join %s: %w", roomIDOrAlias, wrapErr(err))
	}
	c.forgetEncryption(resp.RoomID) // what was seen from outside no longer holds
	return resp.RoomID, nil
}
