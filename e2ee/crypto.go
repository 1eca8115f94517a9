package e2ee

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

const (
	// syncFresh is how recently a Syncer must have fed us a sync response for the state it
	// keeps (members, their devices) to count as current.
	syncFresh = 2 * time.Minute
	// sendOnlyRefresh is how old a room's member list may get, in a client that does not sync,
	// before a send reads it again.
	sendOnlyRefresh = 10 * time.Second
)

// ProcessSync gives a sync response to mautrix's crypto machine and state store, through the
// client's mautrix syncer: room keys and other to-device messages, device list changes, one-
// time key counts, and the rooms' membership (which decides who gets room keys).
func (m *Machine) ProcessSync(ctx context.Context, resp *mautrix.RespSync, since string) error {
	ds, ok := m.mx.Syncer.(*mautrix.DefaultSyncer)
	if !ok {
		return fmt.Errorf("e2ee: the mautrix client's syncer is a %T, not mautrix's default syncer", m.mx.Syncer)
	}
	m.crossMu.Lock()
	err := ds.ProcessResponse(ctx, resp, since)
	m.crossMu.Unlock()
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.lastSync = time.Now()
	m.mu.Unlock()
	return nil
}

// Encrypt encrypts content for room with the room's Megolm session, sharing it first with the
// devices of the room's members where needed.
//
// A client that runs a Syncer knows the members and their devices from it. A client that only
// sends reads the room's state and its members' devices before sending, at most every 10 s,
// and starts a new session when someone has left, so that they cannot read what follows.
func (m *Machine) Encrypt(ctx context.Context, room id.RoomID, evtType event.Type, content any) (*event.EncryptedEventContent, error) {
	if err := m.refreshRoom(ctx, room); err != nil {
		return nil, err
	}
	enc, err := m.helper.Encrypt(ctx, room, evtType, content)
	if err != nil {
		return nil, fmt.Errorf("e2ee: encrypt for %s: %w", room, err)
	}
	return enc, nil
}

// refreshRoom makes sure the state store knows room's encryption and members.
func (m *Machine) refreshRoom(ctx context.Context, room id.RoomID) error {
	m.mu.Lock()
	syncing := time.Since(m.lastSync) < syncFresh
	known, seen := m.rooms[room]
	m.mu.Unlock()
	if seen && (syncing || time.Since(known.at) < sendOnlyRefresh) {
		return nil
	}
	if _, err := m.mx.State(ctx, room); err != nil {
		return fmt.Errorf("e2ee: read state of %s: %w", room, err)
	}
	members, err := m.mx.StateStore.GetRoomJoinedOrInvitedMembers(ctx, room)
	if err != nil {
		return fmt.Errorf("e2ee: members of %s: %w", room, err)
	}
	now := map[id.UserID]bool{}
	for _, u := range members {
		now[u] = true
	}
	if seen && !syncing {
		for u := range known.members {
			if !now[u] {
				// Someone left while nobody was watching: a new session, so that they cannot
				// read what follows with the key they hold.
				if err := m.mach.CryptoStore.RemoveOutboundGroupSession(ctx, room); err != nil {
					return err
				}
				break
			}
		}
	}
	if seen && !syncing {
		// No sync tells us about new devices of members we already know: ask. (Members seen
		// for the first time are looked up by mautrix when it shares the room key.)
		if _, err := m.mach.FetchKeys(ctx, members, true); err != nil {
			return fmt.Errorf("e2ee: device keys of %s's members: %w", room, err)
		}
	}
	m.mu.Lock()
	m.rooms[room] = roomKnown{at: time.Now(), members: now}
	m.mu.Unlock()
	return nil
}

// Decrypt decrypts an m.room.encrypted event. A room key that has not arrived is looked up in
// the key backup, if the device has one (at most once a minute per key). Decrypt returns an
// error wrapping matrix.ErrKeysMissing when the room key is still missing (the Syncer retries
// later), ErrUntrustedSender when the sender's device is below Options.AcceptFrom, and
// mautrix's error for tampered or replayed events.
func (m *Machine) Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			return nil, fmt.Errorf("e2ee: %s: malformed encrypted content: %w", evt.ID, err)
		}
	}
	if _, ok := evt.Content.Parsed.(*event.EncryptedEventContent); !ok {
		return nil, fmt.Errorf("e2ee: %s is not an encrypted event", evt.ID)
	}
	clear, err := m.helper.Decrypt(ctx, evt)
	if (errors.Is(err, crypto.ErrNoSessionFound) || errors.Is(err, crypto.ErrGroupSessionWithheld)) && m.fromBackup(ctx, evt) {
		clear, err = m.helper.Decrypt(ctx, evt)
	}
	if errors.Is(err, crypto.ErrNoSessionFound) {
		return nil, fmt.Errorf("%w: %w", matrix.ErrKeysMissing, err)
	}
	if errors.Is(err, crypto.ErrGroupSessionWithheld) {
		// The sender refused us the key (we are not trusted by them, or joined too late): it
		// may still come by key backup or forwarding, so it is kept and retried.
		return nil, fmt.Errorf("%w: %w", matrix.ErrKeysMissing, err)
	}
	if errors.Is(err, crypto.ErrRatchetError) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The store could not be written (or we are stopping): not the event's fault, so it
		// is kept and tried again rather than dropped.
		return nil, fmt.Errorf("%w: %w", matrix.ErrKeysMissing, err)
	}
	if err != nil {
		return nil, fmt.Errorf("e2ee: decrypt %s: %w", evt.ID, err)
	}
	if clear.Mautrix.TrustState < m.accept {
		return nil, fmt.Errorf("%w: %s sent %s from device trust %s, the policy wants %s", ErrUntrustedSender,
			evt.Sender, evt.ID, clear.Mautrix.TrustState, m.opts.AcceptFrom)
	}
	return clear, nil
}
