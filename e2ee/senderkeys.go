package e2ee

import (
	"context"
	"fmt"
	"sync"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Sender device keys (e2ee flakes and stop part).
//
// mautrix asks the homeserver for the device keys of a message's sender when it does not know
// the sending device: for an Olm message that does not carry them (older clients leave them
// out) and for a Megolm event whose room key came from such a device. For Olm messages it does
// so inside handleEncryptedToDevice's transaction, whose context does not end with the
// Syncer's: a stop would wait for a slow homeserver (two minutes of HTTP timeout, and
// retries). So Enable turns mautrix's own fetching off (DisableDecryptKeyFetching) and this
// file does it instead, with the caller's context and outside any transaction: a stop ends
// the request at once, and the message, not committed, comes again with the next Run.

// senderKeysMax bounds the set of senders asked for: a sender who sends from ever new keys
// (forged ones) makes the set start over rather than grow without end.
const senderKeysMax = 4096

// senderKeyTuple is a sending device as a message names it: its user and identity key.
type senderKeyTuple struct {
	user id.UserID
	key  id.SenderKey
}

// senderKeysAsked records the sending devices whose keys were asked for in this process, so
// that each is asked for once, as mautrix did.
type senderKeysAsked struct {
	mu    sync.Mutex
	asked map[senderKeyTuple]bool
}

func (s *senderKeysAsked) has(k senderKeyTuple) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[k]
}

func (s *senderKeysAsked) add(k senderKeyTuple) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.asked == nil || len(s.asked) >= senderKeysMax {
		s.asked = map[senderKeyTuple]bool{}
	}
	s.asked[k] = true
}

// knowSender makes sure the crypto store has the device keys of the device that sent with key,
// if the homeserver has them: when the store does not know the device and it was not asked
// for before, the sender's devices are fetched, with ctx. It returns an error only when ctx
// ended (the caller stops, and handles the message again later); a homeserver that cannot
// answer is logged, and the message is handled without the device, as mautrix does.
func (m *Machine) knowSender(ctx context.Context, user id.UserID, key id.SenderKey) error {
	k := senderKeyTuple{user, key}
	if key == "" || m.senderKeys.has(k) {
		return nil
	}
	device, err := m.mach.CryptoStore.FindDeviceByKey(ctx, user, key)
	if ctx.Err() != nil {
		return fmt.Errorf("e2ee: look up the device of %s: %w", user, context.Cause(ctx))
	}
	if err == nil && device != nil {
		return nil
	}
	_, err = m.mach.FetchKeys(ctx, []id.UserID{user}, true)
	if ctx.Err() != nil {
		return fmt.Errorf("e2ee: ask the homeserver for the device keys of %s: %w", user, context.Cause(ctx))
	}
	if err != nil {
		m.log.Warn("could not ask the homeserver for a sender's device keys; the message is handled without them",
			"sender", user, "err", err)
	}
	m.senderKeys.add(k)
	return nil
}

// knowOlmSender is knowSender for an Olm-encrypted to-device message.
func (m *Machine) knowOlmSender(ctx context.Context, evt *event.Event) error {
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		return nil
	}
	return m.knowSender(ctx, evt.Sender, content.SenderKey)
}

// decryptKnowingSender decrypts a Megolm event with mautrix; when mautrix does not know the
// device the room key came from, that device's keys are asked for (knowSender) and, if they
// came, the event is decrypted again, so that its trust state is the device's.
func (m *Machine) decryptKnowingSender(ctx context.Context, evt *event.Event) (*event.Event, error) {
	clear, err := m.helper.Decrypt(ctx, evt)
	if err != nil || clear.Mautrix.TrustState != id.TrustStateUnknownDevice {
		return clear, err
	}
	content := evt.Content.AsEncrypted()
	sess, err := m.mach.CryptoStore.GetGroupSession(ctx, evt.RoomID, content.SessionID)
	if err != nil || sess == nil {
		return clear, nil
	}
	k := senderKeyTuple{evt.Sender, sess.SenderKey}
	if m.senderKeys.has(k) {
		return clear, nil
	}
	if err := m.knowSender(ctx, evt.Sender, sess.SenderKey); err != nil {
		return nil, err
	}
	if device, err := m.mach.CryptoStore.FindDeviceByKey(ctx, evt.Sender, sess.SenderKey); err != nil || device == nil {
		return clear, nil
	}
	return m.helper.Decrypt(ctx, evt)
}
