package e2ee

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// MemberCheckInterval is how long, in a client that does not sync, the member list read
	// before one encrypted send serves the sends after it into the same room: a removal by
	// someone else is taken into account by every send that starts this long after it.
	MemberCheckInterval = time.Second
	// DeviceCheckInterval is how long, in a client that does not sync, the members' device
	// lists read before one encrypted send serve the sends after it into the same room: a
	// device added this long before a send gets that message's key.
	DeviceCheckInterval = 10 * time.Second
)

// RotationCause says why a room's outbound room key (Megolm session) was replaced.
type RotationCause string

const (
	// RotationRemoval: this client removed someone from the room (Kick, Ban, a withdrawn
	// invite) or left it.
	RotationRemoval RotationCause = "removal"
	// RotationMemberGone: before a send, the room's members were read and someone who may hold
	// the current key had left, been kicked or banned, or had their invite withdrawn.
	RotationMemberGone RotationCause = "member_gone"
	// RotationNewMember: before a send, the room's members were read and someone had joined
	// or been invited: the next key reaches their devices too.
	RotationNewMember RotationCause = "new_member"
	// RotationOther: mautrix started a new key by itself: a membership or device change seen
	// in sync or in a device list query, or the key reached its age or message limit.
	RotationOther RotationCause = "other"
)

// roomKeys is what this process knows about sending into one room. Its mutex is held while
// the client encrypts for the room and while it removes someone from it, so that no message
// is encrypted with a key the removed member holds.
type roomKeys struct {
	mu        sync.Mutex
	loaded    bool         // the room's state was read in this process
	membersAt time.Time    // when the members were last read from the server, in a client that does not sync
	devicesAt time.Time    // when the members' devices were last queried, in a client that does not sync
	session   id.SessionID // the outbound session of the last message encrypted here
	discarded bool         // this process discarded the session since then

	// Who was in the room when the current outbound session was started (its rows in
	// samtal_e2ee_session_member), read once per session: see newcomer.
	snapSession id.SessionID
	snapshot    map[id.UserID]bool
}

// counters are the Machine's statistics (Stats).
type counters struct {
	rotationRemoval, rotationMemberGone, rotationNewMember, rotationOther atomic.Uint64
	toDeviceRefused, forwardedRefused                                     atomic.Uint64
	missingNotArrived, missingWithheld                                    atomic.Uint64
	arrivedLate, recoveredRequest, recoveredBackup                        atomic.Uint64
	keysRequested, keyRequestsAnswered, keyRequestsRefused                atomic.Uint64
}

func (m *Machine) room(room id.RoomID) *roomKeys {
	m.roomsMu.Lock()
	defer m.roomsMu.Unlock()
	rk := m.rooms[room]
	if rk == nil {
		rk = &roomKeys{}
		m.rooms[room] = rk
	}
	return rk
}

// Removal implements matrix.Rotator: Kick, Ban and Leave of the client go through it. The room
// key is discarded before remove runs, and the room's lock is held until remove returned, so
// that no message of this process is encrypted in between with a key that would go to the
// member being removed; a process that dies after the removal still starts a new key with
// its next message, since the old one is gone from the store.
func (m *Machine) Removal(ctx context.Context, room id.RoomID, user id.UserID, after event.Membership, remove func(context.Context) error) error {
	rk := m.room(room)
	// The lock is held across the removal request on purpose: a send into this room waits
	// for it rather than encrypt with a key that the removed member would get.
	rk.mu.Lock()
	defer rk.mu.Unlock()
	if err := m.discard(ctx, room, rk, RotationRemoval); err != nil {
		return fmt.Errorf("e2ee: discard the room key of %s before removing %s: %w", room, user, err)
	}
	if err := remove(ctx); err != nil {
		return err
	}
	if user != m.c.UserID() {
		// The next key must not go to them, before a sync or a member read says they left.
		if err := m.mx.StateStore.SetMembership(ctx, room, user, after); err != nil {
			m.log.Warn("e2ee: could not record a removal in the state store; the members are read again before the next send",
				"room", room, "user", user, "err", err)
		}
	}
	rk.membersAt = time.Time{}
	return nil
}

// discard removes the room's outbound session from the store, so that the next message
// starts a new one; rk.mu is held. It counts a rotation if there was a session.
func (m *Machine) discard(ctx context.Context, room id.RoomID, rk *roomKeys, cause RotationCause) error {
	current, err := m.mach.CryptoStore.GetOutboundGroupSession(ctx, room)
	if err != nil {
		return err
	}
	if current == nil {
		return nil
	}
	if err := m.mach.CryptoStore.RemoveOutboundGroupSession(ctx, room); err != nil {
		return err
	}
	rk.discarded = true
	switch cause {
	case RotationRemoval:
		m.stats.rotationRemoval.Add(1)
	case RotationMemberGone:
		m.stats.rotationMemberGone.Add(1)
	case RotationNewMember:
		m.stats.rotationNewMember.Add(1)
	}
	m.log.Debug("e2ee: room key discarded; the next message starts a new one", "room", room, "cause", string(cause))
	return nil
}

// noteSession records the session a message was encrypted with, counting rotations that
// mautrix made by itself; rk.mu is held.
func (m *Machine) noteSession(rk *roomKeys, session id.SessionID) {
	if rk.session != "" && session != rk.session && !rk.discarded {
		m.stats.rotationOther.Add(1)
	}
	rk.session, rk.discarded = session, false
}

// refreshRoom makes what the state store and the crypto store know of room current enough to
// encrypt for it; rk.mu is held.
//
// The first send into a room in this process reads the room's state and queries its members'
// devices: what the store remembers may be from before a restart. After that, a client whose
// Syncer is current (matrix.Client.Syncing) relies on sync for members and devices; one that
// does not sync reads the members again when the last read is older than MemberCheckInterval
// and the devices when older than DeviceCheckInterval. Whenever the current key was shared
// with someone who is no longer in the room, the key is discarded. (Someone new is the
// business of newcomer, for every client.)
func (m *Machine) refreshRoom(ctx context.Context, room id.RoomID, rk *roomKeys) error {
	syncing := m.c.Syncing()
	now := time.Now()
	checks := !syncing && !m.noMemberChecks
	readMembers := !rk.loaded || (checks && now.Sub(rk.membersAt) >= MemberCheckInterval)
	readDevices := !rk.loaded || (checks && now.Sub(rk.devicesAt) >= DeviceCheckInterval)
	if !readMembers && !readDevices {
		return nil
	}
	if readMembers {
		// The room's current state, every time: encryption settings, history visibility and
		// every member (lazy-loading syncs leave members out, and they would get no key).
		// Not /members: Dendrite serves it from its sync API, which can lag behind the room
		// server by a moment, and a read right after this client's own kick then showed the
		// removed member as joined again, so the next key went to them.
		if _, err := m.mx.State(ctx, room); err != nil {
			return fmt.Errorf("e2ee: read state of %s: %w", room, err)
		}
		rk.membersAt = now
	}
	after, err := m.joinedOrInvited(ctx, room)
	if err != nil {
		return err
	}
	// Someone is gone if a device of theirs holds the current key and they are no longer in
	// the room: decided from the crypto store, not from what the state store held before, so
	// that nothing else refreshing the state store can hide a removal.
	gone, err := m.heldByNonMember(ctx, room, after)
	if err != nil {
		return err
	}
	if gone {
		if err := m.discard(ctx, room, rk, RotationMemberGone); err != nil {
			return fmt.Errorf("e2ee: discard the room key of %s after a member left: %w", room, err)
		}
	}
	if readDevices {
		users := make([]id.UserID, 0, len(after))
		for u := range after {
			users = append(users, u)
		}
		// A device added since the last look makes mautrix discard the key, so that the next
		// one reaches the new device too.
		if _, err := m.mach.FetchKeys(ctx, users, true); err != nil {
			return fmt.Errorf("e2ee: device keys of %s's members: %w", room, err)
		}
		rk.devicesAt = now
	}
	rk.loaded = true
	return nil
}

// joinedOrInvited is the room's members (joined or invited) as the state store has them.
func (m *Machine) joinedOrInvited(ctx context.Context, room id.RoomID) (map[id.UserID]bool, error) {
	members, err := m.mx.StateStore.GetRoomJoinedOrInvitedMembers(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("e2ee: members of %s: %w", room, err)
	}
	set := make(map[id.UserID]bool, len(members))
	for _, u := range members {
		set[u] = true
	}
	return set, nil
}

// heldByNonMember reports whether a device of a user who is not among members holds room's
// current outbound session (an indexed lookup: see the e2ee schema).
func (m *Machine) heldByNonMember(ctx context.Context, room id.RoomID, members map[id.UserID]bool) (bool, error) {
	holders, err := m.sessionHolders(ctx, room)
	if err != nil {
		return false, err
	}
	for u := range holders {
		if !members[u] {
			return true, nil
		}
	}
	return false, nil
}

// sessionHolders returns, for room's current outbound session, the identity keys of the
// devices it was shared with, by user; nil when there is no session.
func (m *Machine) sessionHolders(ctx context.Context, room id.RoomID) (map[id.UserID][]id.IdentityKey, error) {
	current, err := m.mach.CryptoStore.GetOutboundGroupSession(ctx, room)
	if err != nil || current == nil {
		return nil, err
	}
	rows, err := m.c.Database().Query(ctx, `SELECT user_id, identity_key FROM crypto_megolm_outbound_session_shared WHERE session_id = $1`, current.ID())
	if err != nil {
		return nil, fmt.Errorf("e2ee: who holds the room key of %s: %w", room, err)
	}
	defer rows.Close()
	holders := map[id.UserID][]id.IdentityKey{}
	for rows.Next() {
		var u id.UserID
		var key id.IdentityKey
		if err := rows.Scan(&u, &key); err != nil {
			return nil, err
		}
		holders[u] = append(holders[u], key)
	}
	return holders, rows.Err()
}

// Stats are a Machine's counters since Enable, for metrics and for answering "why can this
// device (not) read that?". Missing keys are counted once per key and process.
type Stats struct {
	Rotations map[RotationCause]uint64 // outbound room keys replaced, by cause

	MissingKeys map[string]uint64 // room keys events needed and the store lacked, by reason: "not_arrived", "withheld"
	Recovered   map[string]uint64 // of those, how they came later: "late" (by themselves), "key_request", "backup"

	KeysRequested       uint64 // m.room_key_request messages sent
	KeyRequestsAnswered uint64 // key requests of other devices answered with the key
	KeyRequestsRefused  uint64 // key requests refused: a stranger, an unverified device, a key from before they joined or after they left

	ToDeviceRefused  uint64 // to-device messages refused before mautrix saw them (malformed)
	ForwardedRefused uint64 // events refused because their key was forwarded by an untrusted device
}

// Stats returns the Machine's counters.
func (m *Machine) Stats() Stats {
	return Stats{
		Rotations: map[RotationCause]uint64{
			RotationRemoval:    m.stats.rotationRemoval.Load(),
			RotationMemberGone: m.stats.rotationMemberGone.Load(),
			RotationNewMember:  m.stats.rotationNewMember.Load(),
			RotationOther:      m.stats.rotationOther.Load(),
		},
		MissingKeys: map[string]uint64{"not_arrived": m.stats.missingNotArrived.Load(), "withheld": m.stats.missingWithheld.Load()},
		Recovered: map[string]uint64{"late": m.stats.arrivedLate.Load(), "key_request": m.stats.recoveredRequest.Load(),
			"backup": m.stats.recoveredBackup.Load()},
		KeysRequested:       m.stats.keysRequested.Load(),
		KeyRequestsAnswered: m.stats.keyRequestsAnswered.Load(),
		KeyRequestsRefused:  m.stats.keyRequestsRefused.Load(),
		ToDeviceRefused:     m.stats.toDeviceRefused.Load(),
		ForwardedRefused:    m.stats.forwardedRefused.Load(),
	}
}

// newcomer discards the room's outbound session when someone is joined or invited now who was
// not when the session was started here, so that the next message's key reaches them; rk.mu is
// held. It is checked before every encrypted send, syncing or not, against what the state
// store says now.
//
// mautrix shares a session once, when it is started, and relies on membership events in sync
// to discard it (except invite -> join: invitees had the key). That leaves two ways for a
// newcomer to be passed over: a membership change the crypto machine did not see before the
// send (a rejoin whose invite it missed), and a restart, after which the member snapshot used
// for key requests would otherwise grow to include people who joined after the session began.
func (m *Machine) newcomer(ctx context.Context, room id.RoomID, rk *roomKeys) error {
	current, err := m.mach.CryptoStore.GetOutboundGroupSession(ctx, room)
	if err != nil {
		return fmt.Errorf("e2ee: current room key of %s: %w", room, err)
	}
	if current == nil {
		return nil
	}
	if rk.snapSession != current.ID() {
		snap, err := m.sessionMembers(ctx, current.ID())
		if err != nil {
			return err
		}
		rk.snapSession, rk.snapshot = current.ID(), snap
	}
	if len(rk.snapshot) == 0 {
		return nil // started before samtal recorded members (an older version): nothing to compare with
	}
	members, err := m.joinedOrInvited(ctx, room)
	if err != nil {
		return err
	}
	for u := range members {
		if !rk.snapshot[u] {
			if err := m.discard(ctx, room, rk, RotationNewMember); err != nil {
				return fmt.Errorf("e2ee: discard the room key of %s for a new member: %w", room, err)
			}
			return nil
		}
	}
	return nil
}

// sessionMembers is who was in the room when this device started session (see
// recordSessionMembers).
func (m *Machine) sessionMembers(ctx context.Context, session id.SessionID) (map[id.UserID]bool, error) {
	rows, err := m.db.Query(ctx, `SELECT user_id FROM samtal_e2ee_session_member WHERE account_id = $1 AND session_id = $2`,
		accountID(m.c), session)
	if err != nil {
		return nil, fmt.Errorf("e2ee: who was in the room when room key %s was started: %w", session, err)
	}
	defer rows.Close()
	set := map[id.UserID]bool{}
	for rows.Next() {
		var u id.UserID
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		set[u] = true
	}
	return set, rows.Err()
}
