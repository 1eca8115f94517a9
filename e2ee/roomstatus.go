package e2ee

import (
	"context"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"
)

// RoomKey describes a room's current outbound room key on this device: whom it was shared
// with and whom not, and why. It answers "why can't the officer read this?" without logs.
type RoomKey struct {
	Room         id.RoomID
	SessionID    id.SessionID  // "" when there is no current key: the next message starts one
	Started      time.Time     // when the key was created
	Messages     int           // messages encrypted with it so far
	SharedWith   []DeviceShare // members' devices that have the key
	WithheldFrom []DeviceShare // members' devices that do not, each with the reason
}

// DeviceShare is one device in a RoomKey.
type DeviceShare struct {
	User   id.UserID
	Device id.DeviceID
	Trust  id.TrustState
	Reason string // for WithheldFrom: why the device does not have the key
}

// RoomKeyStatus describes room's current outbound room key, for the room's members (joined or
// invited). It first brings what the device knows of the room up to date, as a send would (the
// members and their devices; a key that someone gone holds is discarded).
func (m *Machine) RoomKeyStatus(ctx context.Context, room id.RoomID) (RoomKey, error) {
	rk := RoomKey{Room: room}
	keys := m.room(room)
	keys.mu.Lock()
	defer keys.mu.Unlock()
	if err := m.refreshRoom(ctx, room, keys); err != nil {
		return rk, err
	}
	current, err := m.mach.CryptoStore.GetOutboundGroupSession(ctx, room)
	if err != nil {
		return rk, fmt.Errorf("e2ee: room key of %s: %w", room, err)
	}
	holders := map[id.IdentityKey]bool{}
	if current != nil {
		rk.SessionID, rk.Started, rk.Messages = current.ID(), current.CreationTime, current.MessageCount
		byUser, err := m.sessionHolders(ctx, room)
		if err != nil {
			return rk, err
		}
		for _, keys := range byUser {
			for _, k := range keys {
				holders[k] = true
			}
		}
	}
	members, err := m.joinedOrInvited(ctx, room)
	if err != nil {
		return rk, err
	}
	users := make([]id.UserID, 0, len(members))
	for u := range members {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, u := range users {
		devices, err := m.mach.CryptoStore.GetDevices(ctx, u)
		if err != nil {
			return rk, fmt.Errorf("e2ee: devices of %s: %w", u, err)
		}
		ids := make([]id.DeviceID, 0, len(devices))
		for d := range devices {
			ids = append(ids, d)
		}
		slices.Sort(ids)
		for _, d := range ids {
			dev := devices[d]
			if u == m.c.UserID() && d == m.c.DeviceID() {
				continue
			}
			trust, _ := m.mach.ResolveTrustContext(ctx, dev)
			share := DeviceShare{User: u, Device: d, Trust: trust}
			switch {
			case holders[dev.IdentityKey]:
				rk.SharedWith = append(rk.SharedWith, share)
				continue
			case current == nil:
				share.Reason = "no current key: the next message starts one for this device too"
			case trust == id.TrustStateBlacklisted:
				share.Reason = "device blacklisted"
			case trust < m.mach.SendKeysMinTrust:
				share.Reason = fmt.Sprintf("device trust %s is below the ShareWith policy %s", trust, m.opts.ShareWith)
			default:
				share.Reason = "not known when the key was shared (a new device or member): it gets the next key"
			}
			rk.WithheldFrom = append(rk.WithheldFrom, share)
		}
		if len(devices) == 0 {
			rk.WithheldFrom = append(rk.WithheldFrom, DeviceShare{User: u, Reason: "no devices known for this user (none with encryption, or not queried yet)"})
		}
	}
	return rk, nil
}
