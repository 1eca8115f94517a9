package matrix

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrEncryptionRequired is returned when a send or upload targets an end-to-end encrypted room
// and the client has no encryption: samtal never puts plaintext into an encrypted room. Enable
// it with the e2ee package.
var ErrEncryptionRequired = errors.New("matrix: room is end-to-end encrypted and this client has no encryption (see package e2ee)")

// ErrKeysMissing is wrapped by Encryption.Decrypt when an event cannot be decrypted now but
// may be later: its keys have not arrived (yet), or the crypto store could not be written. The
// Syncer keeps such events and tries again with every batch; any other decryption error
// (tampered, replayed, from an untrusted device) is final and the event is dropped.
var ErrKeysMissing = errors.New("matrix: decryption keys not available")

// Encryption is what the e2ee package plugs into a Client. A client without it carries no
// crypto code and refuses encrypted rooms (ErrEncryptionRequired).
type Encryption interface {
	// Encrypt encrypts content for room, first sharing the room key with the devices of its
	// members where needed.
	Encrypt(ctx context.Context, room id.RoomID, evtType event.Type, content any) (*event.EncryptedEventContent, error)
	// ProcessSync gives the crypto machine a sync response before its events are handed out:
	// to-device messages (room keys), device list changes, one-time key counts, membership.
	ProcessSync(ctx context.Context, resp *mautrix.RespSync, since string) error
	// Decrypt decrypts an m.room.encrypted event. The result records how far the sender's
	// device is trusted (Mautrix.TrustState); an error means the event cannot be read now.
	Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error)
}

// UseEncryption makes the client encrypt what it sends into encrypted rooms (messages, files,
// the outbox's retries) and its Syncer decrypt what it receives. The e2ee package calls it.
func (c *Client) UseEncryption(e Encryption) {
	c.encMu.Lock()
	c.enc = e
	c.encMu.Unlock()
}

// Encrypting reports whether encryption was plugged in with UseEncryption.
func (c *Client) Encrypting() bool {
	return c.encryption() != nil
}

func (c *Client) encryption() Encryption {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	return c.enc
}

// encryptionCache remembers which rooms are encrypted. Encryption cannot be turned off in a
// room, so "encrypted" is kept for good; "not encrypted" is asked again after a while, since
// someone may turn it on.
type encryptionCache struct {
	mu    sync.Mutex
	rooms map[id.RoomID]time.Time // zero time: encrypted; else: not encrypted, as of then
}

const plaintextRecheck = 30 * time.Second

// RoomEncrypted reports whether room has m.room.encryption state. Only a definite answer is
// remembered: "encrypted" for good (encryption cannot be turned off), "not encrypted" for 30 s
// (someone may turn it on; the Syncer notices at once). An answer that is not definite is an
// error, never "not encrypted": a room the client cannot read (not joined yet) gives the
// server's refusal (ErrForbidden), a homeserver that cannot be reached ErrUnreachable.
func (c *Client) RoomEncrypted(ctx context.Context, room id.RoomID) (bool, error) {
	if err := ValidateRoomID(room); err != nil {
		return false, err
	}
	c.encRooms.mu.Lock()
	when, known := c.encRooms.rooms[room]
	c.encRooms.mu.Unlock()
	if known && (when.IsZero() || time.Since(when) < plaintextRecheck) {
		return when.IsZero(), nil
	}
	var content event.EncryptionEventContent
	err := wrapErr(c.send.StateEvent(ctx, room, event.StateEncryption, "", &content))
	switch {
	case err == nil && content.Algorithm != "":
		c.setEncrypted(room, time.Time{})
		return true, nil
	case err == nil, errors.Is(err, ErrNotFound):
		c.setEncrypted(room, time.Now())
		return false, nil
	}
	return false, fmt.Errorf("matrix: is %s encrypted: %w", room, err)
}

func (c *Client) setEncrypted(room id.RoomID, asOf time.Time) {
	c.encRooms.mu.Lock()
	defer c.encRooms.mu.Unlock()
	if c.encRooms.rooms == nil {
		c.encRooms.rooms = map[id.RoomID]time.Time{}
	}
	c.encRooms.rooms[room] = asOf
}

// forgetEncryption drops what is remembered about room, as when the client joins it.
func (c *Client) forgetEncryption(room id.RoomID) {
	c.encRooms.mu.Lock()
	defer c.encRooms.mu.Unlock()
	if asOf, ok := c.encRooms.rooms[room]; ok && !asOf.IsZero() {
		delete(c.encRooms.rooms, room)
	}
}

// knownEncrypted reports whether room is known to be encrypted, without asking the server.
func (c *Client) knownEncrypted(room id.RoomID) bool {
	c.encRooms.mu.Lock()
	defer c.encRooms.mu.Unlock()
	asOf, ok := c.encRooms.rooms[room]
	return ok && asOf.IsZero()
}

// markEncrypted records that room is encrypted, as soon as the Syncer sees its m.room.encryption
// event, so that sends stop relying on an older "not encrypted" answer.
func (c *Client) markEncrypted(room id.RoomID) { c.setEncrypted(room, time.Time{}) }

// checkCanSend refuses a room already known to be encrypted when the client cannot encrypt.
// It asks nothing: what is not known yet is decided when the item is sent.
func (c *Client) checkCanSend(room id.RoomID) error {
	if c.knownEncrypted(room) && !c.Encrypting() {
		return fmt.Errorf("%w: %s", ErrEncryptionRequired, room)
	}
	return nil
}
