package e2ee

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/verificationhelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// VerifyOptions say who may verify this device and how the short authentication string (SAS)
// is compared.
type VerifyOptions struct {
	// Allow decides who may start a verification with this device; nil means nobody. Requests
	// from anyone else are cancelled with the reason "not allowed to verify this device". A
	// request from another device of this account is asked about with this account's user ID.
	Allow func(ctx context.Context, user id.UserID) bool
	// Confirm is shown the SAS (emojis with their names, and the decimals) and reports whether
	// the other side shows the same. A bot typically posts them to an operator and waits for an
	// answer; ctx ends when the verification is cancelled or times out. Required: confirming
	// without comparing would let anyone in the middle be verified.
	Confirm func(ctx context.Context, v SAS) bool
}

// SAS is the short authentication string of one verification, to be compared with what the
// other device shows.
type SAS struct {
	TxnID    id.VerificationTransactionID
	With     id.UserID   // the other user
	Device   id.DeviceID // the other device
	Emojis   []Emoji     // seven emojis, or none if the other side cannot show them
	Decimals [3]int      // three numbers between 1000 and 9191
}

// Emoji is one emoji of a SAS with its English name, as Element shows them.
type Emoji struct {
	Char string // "🐶"
	Name string // "Dog"
}

// String shows the SAS on one line, for a log or a message to an operator.
func (s SAS) String() string {
	var b strings.Builder
	for i, e := range s.Emojis {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Char + " " + e.Name)
	}
	if len(s.Emojis) > 0 {
		b.WriteString(" — ")
	}
	fmt.Fprintf(&b, "%d %d %d", s.Decimals[0], s.Decimals[1], s.Decimals[2])
	return b.String()
}

// ErrVerificationCancelled is matched by every error for a verification that either side
// cancelled; errors.As gives the *CancelledError with the code and reason.
var ErrVerificationCancelled = errors.New("e2ee: verification cancelled")

// CancelledError is a verification that was cancelled, by the other side or by us: the SAS did
// not match, the other user is not allowed to verify us, it timed out.
type CancelledError struct {
	With   id.UserID
	Code   event.VerificationCancelCode // m.user, m.mismatched_sas, m.timeout, ...
	Reason string                       // as the cancelling side put it
}

func (e *CancelledError) Error() string {
	return fmt.Sprintf("e2ee: verification with %s cancelled (%s): %s", e.With, e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrVerificationCancelled) true.
func (e *CancelledError) Is(target error) bool { return target == ErrVerificationCancelled }

// Reasons this package gives when it cancels.
const (
	reasonNotAllowed = "not allowed to verify this device"
	reasonMismatch   = "the emojis or numbers do not match"
)

const (
	// verifyTimeout is how long a verification may take, from the request to the end, as the
	// spec recommends; the other side expires it at the same time.
	verifyTimeout = 10 * time.Minute
	// allowTimeout bounds VerifyOptions.Allow, which runs while a sync response is processed.
	allowTimeout = 30 * time.Second
	// membersTTL is how long AllowMembersOf trusts the member list it read.
	membersTTL = 30 * time.Second
)

// AllowMembersOf returns a VerifyOptions.Allow that admits the joined members of room, such as
// an agency's admin room. It reads the members from the server and keeps them for 30 seconds;
// when they cannot be read it admits nobody.
func AllowMembersOf(c *matrix.Client, room id.RoomID) func(ctx context.Context, user id.UserID) bool {
	var (
		mu      sync.Mutex
		members map[id.UserID]bool
		read    time.Time
	)
	return func(ctx context.Context, user id.UserID) bool {
		mu.Lock()
		defer mu.Unlock()
		if members == nil || time.Since(read) > membersTTL {
			resp, err := c.Mautrix().JoinedMembers(ctx, room)
			if err != nil {
				c.Logger().Warn("e2ee: cannot read who may verify this device; admitting nobody", "room", room, "err", err)
				members = nil
				return false
			}
			members = make(map[id.UserID]bool, len(resp.Joined))
			for u := range resp.Joined {
				members[u] = true
			}
			read = time.Now()
		}
		return members[user]
	}
}

// EnableVerification lets this device be verified, and verify others (Verify), by comparing
// emojis or numbers (SAS), as Element does. Requests arrive through the client's Syncer, as
// to-device messages or in a room. Call it once, after Enable and before the client's Syncer
// first runs: it registers handlers with the sync machinery that must not change while a sync
// is processed. ctx is used for the setup only.
//
// After a verification succeeds, the other device is Verified here (its messages carry
// id.TrustStateVerified, and Options.ShareWith and AcceptFrom count it as verified), and the
// encrypted rooms shared with its owner get a new room key, so that a device refused keys so
// far reads what follows. With this device's cross-signing keys in memory (after Bootstrap or
// Recover, and on every later start) mautrix also signs the other user's identity, or our own
// other device. Without them the device is Verified here only, and two cases fail: verifying
// our own other devices, and verifying a user who has cross-signing keys (every Element user),
// whose master key comes along and cannot be signed; mautrix then cancels after the codes
// matched, although it has marked their device Verified here.
func (m *Machine) EnableVerification(ctx context.Context, opts VerifyOptions) error {
	if opts.Confirm == nil {
		return errors.New("e2ee: VerifyOptions.Confirm is required: a SAS that nobody compares proves nothing")
	}
	ds, ok := m.mx.Syncer.(*mautrix.DefaultSyncer)
	if !ok {
		return fmt.Errorf("e2ee: the mautrix client's syncer is a %T, not mautrix's default syncer", m.mx.Syncer)
	}
	m.mu.Lock()
	synced := m.synced
	m.mu.Unlock()
	if synced {
		return errors.New("e2ee: EnableVerification must be called before the client's Syncer first runs")
	}
	v := &verifier{m: m, opts: opts, store: &lockedStore{s: verificationhelper.NewInMemoryVerificationStore()},
		private: mautrix.NewDefaultSyncer(), txns: map[id.VerificationTransactionID]*verification{}, seen: map[string]time.Time{}}
	m.mu.Lock()
	if m.verify != nil {
		m.mu.Unlock()
		return errors.New("e2ee: verification is already enabled")
	}
	m.verify = v
	m.mu.Unlock()
	v.vh = verificationhelper.NewVerificationHelper(m.mx, m.mach, v.store, v, false, false, true)
	// The helper registers its handlers on the client's syncer. It gets a private one, which
	// sees only what forward and forwardInRoom pass on (no Syncer runs yet, so the swap is
	// unobserved).
	m.mx.Syncer = v.private
	err := v.vh.Init(ctx)
	m.mx.Syncer = ds
	if err != nil {
		m.mu.Lock()
		m.verify = nil
		m.mu.Unlock()
		return fmt.Errorf("e2ee: start verification: %w", err)
	}
	for _, t := range []event.Type{event.ToDeviceVerificationRequest, event.ToDeviceVerificationReady,
		event.ToDeviceVerificationStart, event.ToDeviceVerificationAccept, event.ToDeviceVerificationKey,
		event.ToDeviceVerificationMAC, event.ToDeviceVerificationDone, event.ToDeviceVerificationCancel} {
		ds.OnEventType(t, v.forward)
	}
	for _, t := range []event.Type{event.EventMessage, event.InRoomVerificationReady,
		event.InRoomVerificationStart, event.InRoomVerificationAccept, event.InRoomVerificationKey,
		event.InRoomVerificationMAC, event.InRoomVerificationDone, event.InRoomVerificationCancel} {
		ds.OnEventType(t, v.forwardInRoom)
	}
	return nil
}

// Verify verifies device of user from our side, by SAS, and returns when it is done: nil when
// both sides confirmed, a *CancelledError (errors.Is ErrVerificationCancelled) when either
// side cancelled or 10 minutes passed, ctx's error when ctx ended first (the verification is
// then cancelled). With device "" the request goes to all of user's devices and the first to
// accept it is verified. EnableVerification must have been called; VerifyOptions.Confirm is
// shown the SAS.
func (m *Machine) Verify(ctx context.Context, user id.UserID, device id.DeviceID) error {
	v, err := m.verifier()
	if err != nil {
		return err
	}
	targets, err := m.verifyTargets(ctx, user, device)
	if err != nil {
		return err
	}
	txn := id.NewVerificationTransactionID()
	vr := v.track(txn, user, device, true)
	// The helper's StartVerification would ask every device; this asks targets only. The
	// transaction is stored before the request leaves, so that the answer finds it.
	now := time.Now()
	err = v.store.SaveVerificationTransaction(ctx, verificationhelper.VerificationTransaction{
		ExpirationTime:    jsontime.UM(now.Add(verifyTimeout)),
		VerificationState: verificationhelper.VerificationStateRequested,
		TransactionID:     txn,
		TheirUserID:       user,
		SentToDeviceIDs:   targets,
	})
	if err == nil {
		content := &event.Content{Parsed: &event.VerificationRequestEventContent{
			ToDeviceVerificationEvent: event.ToDeviceVerificationEvent{TransactionID: txn},
			FromDevice:                m.c.DeviceID(),
			Methods:                   []event.VerificationMethod{event.VerificationMethodSAS},
			Timestamp:                 jsontime.UM(now),
		}}
		req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{user: {}}}
		for _, d := range targets {
			req.Messages[user][d] = content
		}
		_, err = m.mx.SendToDevice(ctx, event.ToDeviceVerificationRequest, req)
	}
	if err != nil {
		v.finish(txn, nil)
		_ = v.store.DeleteVerification(ctx, txn)
		return fmt.Errorf("e2ee: request verification of %s: %w", user, err)
	}
	m.log.Info("verification requested", "user", user, "devices", targets, "txn", txn)
	return v.await(ctx, txn, vr)
}

// VerifyInRoom is Verify with the request sent into room (a direct chat with user, say), as
// Element does when one user verifies another: user's clients show it there, and the first of
// user's devices to accept it is verified.
func (m *Machine) VerifyInRoom(ctx context.Context, room id.RoomID, user id.UserID) error {
	v, err := m.verifier()
	if err != nil {
		return err
	}
	// Not the helper's StartInRoomVerification: it encrypts the request and then has the
	// client encrypt it again.
	resp, err := m.mx.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{
		MsgType:    event.MsgVerificationRequest,
		Body:       fmt.Sprintf("%s wants to verify you; your client cannot do that in a room.", m.c.UserID()),
		FromDevice: m.c.DeviceID(),
		Methods:    []event.VerificationMethod{event.VerificationMethodSAS},
		To:         user,
	})
	if err != nil {
		return fmt.Errorf("e2ee: request verification of %s in %s: %w", user, room, err)
	}
	// The transaction ID is the request's event ID, known only now; the answer takes at least
	// a sync of theirs and one of ours.
	txn := id.VerificationTransactionID(resp.EventID)
	vr := v.track(txn, user, "", true)
	err = v.store.SaveVerificationTransaction(ctx, verificationhelper.VerificationTransaction{
		ExpirationTime:    jsontime.UM(time.Now().Add(verifyTimeout)),
		RoomID:            room,
		VerificationState: verificationhelper.VerificationStateRequested,
		TransactionID:     txn,
		TheirUserID:       user,
	})
	if err != nil {
		v.finish(txn, nil)
		return fmt.Errorf("e2ee: request verification of %s in %s: %w", user, room, err)
	}
	m.log.Info("verification requested", "user", user, "room", room, "txn", txn)
	return v.await(ctx, txn, vr)
}
