package e2ee

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// ProcessSync gives a sync response to mautrix's crypto machine and state store, through the
// client's mautrix syncer: room keys and other to-device messages, device list changes, one-
// time key counts, and the rooms' membership (which decides who gets room keys).
//
// Each encrypted to-device message (a room key, a forwarded key, a secret) is handled in one
// database transaction: the Olm session it advances, the hash that marks it as seen and the
// keys it carries are stored together or not at all. A process killed halfway through a
// response therefore handles the messages not yet committed again from the same sync, and
// mautrix recognises those already committed as duplicates, with their keys stored: no room
// key is lost to a kill.
func (m *Machine) ProcessSync(ctx context.Context, resp *mautrix.RespSync, since string) error {
	ds, ok := m.mx.Syncer.(*mautrix.DefaultSyncer)
	if !ok {
		return fmt.Errorf("e2ee: the mautrix client's syncer is a %T, not mautrix's default syncer", m.mx.Syncer)
	}
	// Bootstrap, Recover or Status may hold the lock while they wait for the homeserver: a
	// Syncer told to stop gives up waiting (the batch is not committed).
	if err := m.crossMu.lock(ctx); err != nil {
		return fmt.Errorf("e2ee: %w", err)
	}
	defer m.crossMu.unlock()
	// mautrix's own order: device lists, to-device messages, then the rest. The first two are
	// done here, and the response that goes on to mautrix's syncer has them taken out.
	m.mach.HandleDeviceLists(ctx, &resp.DeviceLists, since)
	rest := *resp
	rest.DeviceLists = mautrix.DeviceLists{}
	rest.ToDevice.Events = nil
	// mautrix keeps some events in goroutines of its own (waiting for a missing key); the
	// Syncer goes on preparing the response's events for its handlers, so mautrix gets copies.
	rest.Rooms.Join = make(map[id.RoomID]*mautrix.SyncJoinedRoom, len(resp.Rooms.Join))
	for room, r := range resp.Rooms.Join {
		cp := *r
		cp.Timeline.Events = copyEvents(r.Timeline.Events)
		cp.State.Events = copyEvents(r.State.Events)
		rest.Rooms.Join[room] = &cp
	}
	rest.Rooms.Leave = make(map[id.RoomID]*mautrix.SyncLeftRoom, len(resp.Rooms.Leave))
	for room, r := range resp.Rooms.Leave {
		cp := *r
		cp.Timeline.Events = copyEvents(r.Timeline.Events)
		cp.State.Events = copyEvents(r.State.Events)
		rest.Rooms.Leave[room] = &cp
	}
	for _, evt := range resp.ToDevice.Events {
		if evt == nil {
			continue
		}
		if evt.Type.Type != event.ToDeviceEncrypted.Type {
			// Key requests, withheld notices, verification: nothing to lose by handling them
			// twice, and mautrix answers some of them in goroutines of their own.
			rest.ToDevice.Events = append(rest.ToDevice.Events, evt)
			continue
		}
		if err := m.handleEncryptedToDevice(ctx, evt); err != nil {
			return err
		}
	}
	if err := ds.ProcessResponse(ctx, &rest, since); err != nil {
		return err
	}
	m.mu.Lock()
	m.synced = true
	m.mu.Unlock()
	return nil
}

// copyEvents returns shallow copies of evts: each event struct is new (mautrix sets its room
// ID, type class and parsed content), what the events point to is shared and not changed.
func copyEvents(evts []*event.Event) []*event.Event {
	out := make([]*event.Event, len(evts))
	for i, evt := range evts {
		if evt != nil {
			cp := *evt
			out[i] = &cp
		}
	}
	return out
}

// handleEncryptedToDevice decrypts an Olm-encrypted to-device message and stores what it
// carries, all in one transaction. The transaction does not end with ctx: a Syncer that stops
// finishes the message it is in (a moment), so that mautrix's in-memory Olm sessions never
// run ahead of the stored ones. What needs the homeserver (the sender's device keys, when the
// store does not have them) is done before, with ctx (knowOlmSender): a stop does not wait
// for the homeserver, and ends with ctx's error, so the batch is not committed and the
// message is handled with the next one.
func (m *Machine) handleEncryptedToDevice(ctx context.Context, evt *event.Event) error {
	evt.Type.Class = event.ToDeviceEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
		m.stats.toDeviceRefused.Add(1)
		m.log.Warn("e2ee: to-device message does not parse; ignored", "sender", evt.Sender, "err", err)
		return nil
	}
	if why := m.forgedToDevice(ctx, evt); why != "" {
		m.stats.toDeviceRefused.Add(1)
		m.log.Warn("e2ee: to-device message refused", "sender", evt.Sender, "why", why)
		return nil
	}
	// The network part first, with ctx: a stop ends it, and the message comes again.
	if err := m.knowOlmSender(ctx, evt); err != nil {
		return err
	}
	err := m.c.Database().DoTxn(context.WithoutCancel(ctx), nil, func(ctx context.Context) error {
		m.mach.HandleToDeviceEvent(ctx, evt)
		return nil
	})
	if err != nil {
		return fmt.Errorf("e2ee: store what a to-device message from %s carried: %w", evt.Sender, err)
	}
	return nil
}

// forgedToDevice says why an Olm-encrypted to-device message is refused before mautrix sees
// it, or "": it has no ciphertext for this device, or it claims to come from a device key that
// belongs to another user than the one the homeserver says sent it.
func (m *Machine) forgedToDevice(ctx context.Context, evt *event.Event) string {
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok || content.Algorithm != id.AlgorithmOlmV1 {
		return "not an Olm message"
	}
	if _, ok := content.OlmCiphertext[m.mach.OwnIdentity().IdentityKey]; !ok {
		return "no ciphertext for this device"
	}
	var owner id.UserID
	err := m.c.Database().QueryRow(ctx, `SELECT user_id FROM crypto_device WHERE identity_key = $1 AND NOT deleted LIMIT 1`, content.SenderKey).Scan(&owner)
	if err == nil && owner != evt.Sender {
		return "sender key belongs to another user's device"
	}
	return ""
}

// Encrypt encrypts content for room with the room's Megolm session, sharing it first with the
// devices of the room's members where needed. What it relies on to know the members and their
// devices is in the package documentation ("Who gets the room key").
func (m *Machine) Encrypt(ctx context.Context, room id.RoomID, evtType event.Type, content any) (*event.EncryptedEventContent, error) {
	rk := m.room(room)
	rk.mu.Lock()
	defer rk.mu.Unlock()
	if err := m.refreshRoom(ctx, room, rk); err != nil {
		return nil, err
	}
	if err := m.newcomer(ctx, room, rk); err != nil {
		return nil, err
	}
	enc, err := m.helper.Encrypt(ctx, room, evtType, content)
	if err != nil {
		return nil, fmt.Errorf("e2ee: encrypt for %s: %w", room, err)
	}
	if enc.SessionID != rk.session {
		if err := m.recordSessionMembers(ctx, room, enc.SessionID); err != nil {
			return nil, fmt.Errorf("e2ee: record who is in %s: %w", room, err)
		}
	}
	m.noteSession(rk, enc.SessionID)
	return enc, nil
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
	content := evt.Content.AsEncrypted()
	clear, err := m.decryptKnowingSender(ctx, evt)
	if (errors.Is(err, crypto.ErrNoSessionFound) || errors.Is(err, crypto.ErrGroupSessionWithheld)) && m.fromBackup(ctx, evt) {
		clear, err = m.decryptKnowingSender(ctx, evt)
	}
	if errors.Is(err, crypto.ErrNoSessionFound) || errors.Is(err, crypto.ErrGroupSessionWithheld) {
		// Not arrived (yet), or the sender refused us the key (we are not trusted by them, or
		// joined too late): it may still come by itself, by key request, or from the backup,
		// so the event is kept and retried.
		m.noteMissing(ctx, evt, content, errors.Is(err, crypto.ErrGroupSessionWithheld))
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
	m.noteDecrypted(ctx, evt.RoomID, content.SessionID)
	if clear.Mautrix.ForwardedKeys && m.forwardedByStranger(ctx, evt.RoomID, content.SessionID) {
		m.stats.forwardedRefused.Add(1)
		return nil, fmt.Errorf("%w: the room key of %s was forwarded by a device that neither made it nor is a verified device of this account",
			ErrUntrustedSender, evt.ID)
	}
	if clear.Mautrix.TrustState < m.accept {
		return nil, fmt.Errorf("%w: %s sent %s from device trust %s, the policy wants %s", ErrUntrustedSender,
			evt.Sender, evt.ID, clear.Mautrix.TrustState, m.opts.AcceptFrom)
	}
	return clear, nil
}
