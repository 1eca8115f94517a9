package e2ee

import (
	"context"
	"sync"
	"time"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// keyRequestGrace is how long a missing room key is given to arrive by itself (it usually
	// comes in the same sync as the message, or the next) before it is asked for.
	keyRequestGrace = 3 * time.Second
	// keyRequestAgain is the longest wait between two requests for a key that has still not
	// come; the waits double from keyRequestGrace up to it (a sender may change its mind, as
	// when it verifies our device).
	keyRequestAgain = 5 * time.Minute
	// maxMissingKeys bounds the missing keys remembered in memory; past it, the oldest is
	// forgotten (and asked for again if it is still missing).
	maxMissingKeys = 10000
)

// missingKey is a room key that an event needed and the store did not have.
type missingKey struct {
	first     time.Time // when it was first found missing in this process
	requested time.Time // when it was last asked for; zero if never
	asked     int       // how often it was asked for
}

// missingKeys are the room keys this process found missing, by session.
type missingKeys struct {
	mu   sync.Mutex
	keys map[id.SessionID]*missingKey
}

// noteMissing records that evt could not be decrypted for want of its room key, counts it by
// reason the first time, and, once the key has had keyRequestGrace to arrive by itself, asks
// the sender's device and this account's other devices for it (m.room_key_request), again
// after 6 s, 12 s, and so on up to every keyRequestAgain while it stays missing.
func (m *Machine) noteMissing(ctx context.Context, evt *event.Event, content *event.EncryptedEventContent, withheld bool) {
	now := time.Now()
	m.missing.mu.Lock()
	if m.missing.keys == nil {
		m.missing.keys = map[id.SessionID]*missingKey{}
	}
	mk := m.missing.keys[content.SessionID]
	if mk == nil {
		if len(m.missing.keys) >= maxMissingKeys {
			var oldest id.SessionID
			for s, k := range m.missing.keys {
				if oldest == "" || k.first.Before(m.missing.keys[oldest].first) {
					oldest = s
				}
			}
			delete(m.missing.keys, oldest)
		}
		mk = &missingKey{first: now}
		m.missing.keys[content.SessionID] = mk
		if withheld {
			m.stats.missingWithheld.Add(1)
		} else {
			m.stats.missingNotArrived.Add(1)
		}
	}
	due := now.Sub(mk.first) >= keyRequestGrace &&
		(mk.requested.IsZero() || now.Sub(mk.requested) >= min(keyRequestGrace<<min(mk.asked, 10), keyRequestAgain))
	if due {
		mk.requested = now
		mk.asked++
	}
	m.missing.mu.Unlock()
	if !due {
		return
	}
	sender := id.DeviceID("*") // the sender's devices, unless we know which one made the key
	if dev, err := m.mach.CryptoStore.FindDeviceByKey(ctx, evt.Sender, content.SenderKey); err == nil && dev != nil {
		sender = dev.DeviceID
	}
	to := map[id.UserID][]id.DeviceID{evt.Sender: {sender}}
	if evt.Sender != m.c.UserID() {
		to[m.c.UserID()] = []id.DeviceID{"*"}
	}
	if err := m.mach.SendRoomKeyRequest(ctx, evt.RoomID, content.SenderKey, content.SessionID, "", to); err != nil {
		m.log.Warn("e2ee: could not ask for a missing room key; asking again later", "room", evt.RoomID, "session", content.SessionID, "err", err)
		m.missing.mu.Lock()
		mk.requested = time.Time{}
		m.missing.mu.Unlock()
		return
	}
	m.stats.keysRequested.Add(1)
	m.log.Info("e2ee: asked for a missing room key", "room", evt.RoomID, "session", content.SessionID, "sender", evt.Sender)
}

// noteDecrypted counts a key that was missing and is now there, by how it came.
func (m *Machine) noteDecrypted(ctx context.Context, room id.RoomID, session id.SessionID) {
	m.missing.mu.Lock()
	_, was := m.missing.keys[session]
	delete(m.missing.keys, session)
	m.missing.mu.Unlock()
	if !was {
		return
	}
	source := id.KeySourceDirect
	if igs, err := m.mach.CryptoStore.GetGroupSession(ctx, room, session); err == nil && igs != nil {
		switch {
		case igs.KeySource == id.KeySourceBackup:
			source = id.KeySourceBackup
		case len(igs.ForwardingChains) > 0 || igs.KeySource == id.KeySourceForward:
			source = id.KeySourceForward
		}
	}
	switch source {
	case id.KeySourceBackup:
		m.stats.recoveredBackup.Add(1)
	case id.KeySourceForward:
		m.stats.recoveredRequest.Add(1)
	default:
		m.stats.arrivedLate.Add(1)
	}
}

// recordSessionMembers remembers who was in room when this device started using its outbound
// session there: the users a key request for it may be answered for. rk.mu is held.
func (m *Machine) recordSessionMembers(ctx context.Context, room id.RoomID, session id.SessionID) error {
	members, err := m.joinedOrInvited(ctx, room)
	if err != nil {
		return err
	}
	return m.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for u := range members {
			if _, err := m.db.Exec(ctx, `INSERT INTO samtal_e2ee_session_member (account_id, session_id, user_id) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, accountID(m.c), session, u); err != nil {
				return err
			}
		}
		return nil
	})
}

// allowKeyShare decides whether to answer a key request (it replaces mautrix's default).
//
//   - This device's own requests are ignored; blacklisted devices are refused.
//   - Another device of this account gets the key if it is verified (cross-signed by this
//     account's own keys, or verified by hand).
//   - Another user's device gets a key that was shared with it before (it lost it), or one
//     this device started while that user was in the room and that was withheld from the
//     device then, if the device now meets Options.ShareWith. Anything else is refused: no
//     key from before someone joined or after they were removed is handed out on request.
func (m *Machine) allowKeyShare(ctx context.Context, device *id.Device, info event.RequestedKeyInfo) *crypto.KeyShareRejection {
	refuse := func(r crypto.KeyShareRejection, why string) *crypto.KeyShareRejection {
		m.stats.keyRequestsRefused.Add(1)
		m.log.Info("e2ee: refused a key request", "user", device.UserID, "device", device.DeviceID, "room", info.RoomID, "session", info.SessionID, "why", why)
		return &r
	}
	own := m.c.UserID()
	switch {
	case device.UserID == own && device.DeviceID == m.c.DeviceID():
		return &crypto.KeyShareRejectNoResponse
	case device.Trust == id.TrustStateBlacklisted:
		return refuse(crypto.KeyShareRejectBlacklisted, "blacklisted device")
	}
	trust, err := m.mach.ResolveTrustContext(ctx, device)
	if err != nil {
		return refuse(crypto.KeyShareRejectInternalError, "cannot resolve the device's trust")
	}
	if device.UserID == own {
		if trust < id.TrustStateCrossSignedVerified {
			return refuse(crypto.KeyShareRejectUnverified, "own device not verified")
		}
		m.stats.keyRequestsAnswered.Add(1)
		return nil
	}
	shared, err := m.mach.CryptoStore.IsOutboundGroupSessionShared(ctx, device.UserID, device.IdentityKey, info.SessionID)
	if err != nil {
		return refuse(crypto.KeyShareRejectInternalError, "cannot read whom the key was shared with")
	}
	if shared {
		m.stats.keyRequestsAnswered.Add(1)
		return nil
	}
	var member bool
	err = m.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM samtal_e2ee_session_member WHERE account_id = $1 AND session_id = $2 AND user_id = $3)`,
		accountID(m.c), info.SessionID, device.UserID).Scan(&member)
	if err != nil {
		return refuse(crypto.KeyShareRejectInternalError, "cannot read who was in the room")
	}
	if !member {
		return refuse(crypto.KeyShareRejectNotRecipient, "not in the room when the key was started here")
	}
	if trust < m.mach.SendKeysMinTrust {
		return refuse(crypto.KeyShareRejectUnverified, "device below the ShareWith policy")
	}
	m.stats.keyRequestsAnswered.Add(1)
	return nil
}

// forwardedByStranger reports whether the room key of a decrypted event came forwarded by a
// device that is neither the key's creator nor a verified device of this account: such a key
// proves nothing about who wrote the event.
func (m *Machine) forwardedByStranger(ctx context.Context, room id.RoomID, session id.SessionID) bool {
	igs, err := m.mach.CryptoStore.GetGroupSession(ctx, room, session)
	if err != nil || igs == nil || len(igs.ForwardingChains) == 0 {
		return false
	}
	last := id.IdentityKey(igs.ForwardingChains[len(igs.ForwardingChains)-1])
	if last == igs.SenderKey {
		return false // forwarded by the device that created it
	}
	device, err := m.mach.CryptoStore.FindDeviceByKey(ctx, m.c.UserID(), last)
	if err != nil || device == nil {
		return true
	}
	trust, err := m.mach.ResolveTrustContext(ctx, device)
	return err != nil || trust < id.TrustStateCrossSignedVerified
}
