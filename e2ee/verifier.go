package e2ee

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/verificationhelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func (m *Machine) verifier() (*verifier, error) {
	m.mu.Lock()
	v := m.verify
	m.mu.Unlock()
	if v == nil {
		return nil, errors.New("e2ee: verification needs EnableVerification first")
	}
	return v, nil
}

// verifyTargets returns the devices a verification request goes to: device, or all of user's
// devices but this one.
func (m *Machine) verifyTargets(ctx context.Context, user id.UserID, device id.DeviceID) ([]id.DeviceID, error) {
	if device != "" {
		if _, err := m.mach.GetOrFetchDevice(ctx, user, device); err != nil {
			return nil, fmt.Errorf("e2ee: verify %s's device %s: %w", user, device, err)
		}
		return []id.DeviceID{device}, nil
	}
	devices, err := m.mach.CryptoStore.GetDevices(ctx, user)
	if err == nil && len(devices) == 0 {
		var keys map[id.UserID]map[id.DeviceID]*id.Device
		keys, err = m.mach.FetchKeys(ctx, []id.UserID{user}, true)
		devices = keys[user]
	}
	if err != nil {
		return nil, fmt.Errorf("e2ee: devices of %s: %w", user, err)
	}
	var targets []id.DeviceID
	for d := range devices {
		if user != m.c.UserID() || d != m.c.DeviceID() {
			targets = append(targets, d)
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("e2ee: %s has no devices to verify", user)
	}
	return targets, nil
}

// verifier is a Machine's verification: mautrix's helper, our policy around it, and the
// verifications in progress.
type verifier struct {
	m       *Machine
	opts    VerifyOptions
	vh      *verificationhelper.VerificationHelper
	store   *lockedStore
	private *mautrix.DefaultSyncer // the helper's own syncer, fed by forward and forwardInRoom

	mu   sync.Mutex
	txns map[id.VerificationTransactionID]*verification
	// heldCount counts the events hold kept back, for tests.
	heldCount atomic.Int64
	seen      map[string]time.Time // events passed on to the helper, for repeated
}

// verification is one verification in progress.
type verification struct {
	with    id.UserID
	device  id.DeviceID
	ours    bool               // we sent the request (Verify), so we start the SAS once they are ready
	result  chan error         // the outcome, for Verify; buffered
	stop    context.CancelFunc // ends a running Confirm; nil before the SAS is shown
	rekeyed bool               // afterMAC has started new room keys for them

	confirmed bool           // our MAC is sent (ConfirmSAS returned)
	held      []*event.Event // their MAC, arrived before we confirmed, and what followed it (hold)
}

var (
	_ verificationhelper.RequiredCallbacks = (*verifier)(nil)
	_ verificationhelper.ShowSASCallbacks  = (*verifier)(nil)
)

// forward passes to-device verification events on to the helper.
func (v *verifier) forward(ctx context.Context, evt *event.Event) {
	if v.repeated(evt.Type.Type + "|" + evt.Sender.String() + "|" + string(evt.Content.VeryRaw)) {
		return
	}
	if c, ok := evt.Content.Parsed.(event.VerificationTransactionable); ok && v.hold(c.GetTransactionID(), evt, evt.Type == event.ToDeviceVerificationMAC) {
		return
	}
	v.private.Dispatch(ctx, evt)
	if evt.Type == event.ToDeviceVerificationMAC {
		if c, ok := evt.Content.Parsed.(event.VerificationTransactionable); ok {
			v.afterMAC(ctx, c.GetTransactionID())
		}
	}
}

// hold keeps their MAC of a verification whose SAS we have not confirmed yet, and every event
// of theirs for it that follows (their done must not reach the helper before their MAC), to
// pass them on once we have (confirmedSAS); it reports whether it did. When their MAC reaches
// mautrix's helper (v0.32.0) before our confirmation, ConfirmSAS checks their cross-signing
// identity against our own master key, not theirs, and fails with "master keys do not match":
// every verification between two cross-signed users in which the other side confirmed first
// was cancelled (mautrix/go pull request 554, not merged). Held until we have confirmed, their
// MAC takes the helper's other path, which checks it against their master key. Events of
// anyone but the other party, and cancellations, are not held.
func (v *verifier) hold(txn id.VerificationTransactionID, evt *event.Event, isMAC bool) bool {
	if evt.Type == event.ToDeviceVerificationCancel || evt.Type == event.InRoomVerificationCancel {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	vr := v.txns[txn]
	if vr == nil || vr.confirmed || evt.Sender != vr.with || (!isMAC && len(vr.held) == 0) {
		return false
	}
	if len(vr.held) < maxHeld { // a peer sending more than a verification takes gets the first few
		vr.held = append(vr.held, evt)
	}
	v.heldCount.Add(1)
	return true
}

// maxHeld bounds the events held for one verification (hold).
const maxHeld = 8

// confirmedSAS records that our MAC is sent and passes on, in order, what was held meanwhile;
// what arrives while it does so is held and passed on after it.
func (v *verifier) confirmedSAS(ctx context.Context, txn id.VerificationTransactionID) {
	for {
		v.mu.Lock()
		vr := v.txns[txn]
		if vr == nil || len(vr.held) == 0 {
			if vr != nil {
				vr.confirmed = true
			}
			v.mu.Unlock()
			return
		}
		held := vr.held
		vr.held = nil
		v.mu.Unlock()
		for _, evt := range held {
			v.private.Dispatch(ctx, evt)
		}
	}
}

// forwardInRoom passes in-room verification events on to the helper: requests addressed to us,
// and the events of verifications it knows. Our own events come back with each sync and are
// dropped (in-room verification is always between two users), as are other people's
// verifications in a shared room, which the helper would otherwise cancel as unknown. The
// helper takes a follow-up's event ID for the transaction ID, where the spec has the request's
// event ID in m.relates_to, so the event is handed over with that ID.
func (v *verifier) forwardInRoom(ctx context.Context, evt *event.Event) {
	if evt.Sender == v.m.c.UserID() {
		return
	}
	if evt.Type == event.EventMessage {
		msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if ok && msg.MsgType == event.MsgVerificationRequest && msg.To == v.m.c.UserID() && !v.repeated(evt.ID.String()) {
			v.private.Dispatch(ctx, evt)
		}
		return
	}
	request := relatesTo(evt)
	if request == "" {
		return
	}
	if _, err := v.store.GetVerificationTransaction(ctx, id.VerificationTransactionID(request)); err != nil || v.repeated(evt.ID.String()) {
		return
	}
	fixed := *evt
	fixed.ID = request
	if v.hold(id.VerificationTransactionID(request), &fixed, evt.Type == event.InRoomVerificationMAC) {
		return
	}
	v.private.Dispatch(ctx, &fixed)
	if evt.Type == event.InRoomVerificationMAC {
		v.afterMAC(ctx, id.VerificationTransactionID(request))
	}
}

// maxSeenVerification bounds the memory of verification events passed on.
const maxSeenVerification = 4096

// repeated reports whether an event was passed on before. A sync batch that failed halfway is
// processed again, and the helper would take a repeated verification event for a protocol
// violation and cancel.
func (v *verifier) repeated(key string) bool {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[key]; ok {
		return true
	}
	if len(v.seen) >= maxSeenVerification {
		// Pruned only when full, so a flood costs one scan per maxSeenVerification events.
		for k, at := range v.seen {
			if now.Sub(at) > verifyTimeout {
				delete(v.seen, k)
			}
		}
		if len(v.seen) >= maxSeenVerification {
			clear(v.seen) // a flood: forgetting may let one repeat through, which mautrix cancels
		}
	}
	v.seen[key] = now
	return false
}

// relatesTo is the event an in-room verification event refers to: its request.
func relatesTo(evt *event.Event) id.EventID {
	if r, ok := evt.Content.Parsed.(interface{ OptionalGetRelatesTo() *event.RelatesTo }); ok {
		if rel := r.OptionalGetRelatesTo(); rel != nil && rel.EventID != "" {
			return rel.EventID
		}
	}
	rel, _ := evt.Content.Raw["m.relates_to"].(map[string]any)
	ev, _ := rel["event_id"].(string)
	return id.EventID(ev)
}

// VerificationRequested decides on a request from someone else: accepted if Allow admits them,
// else cancelled.
func (v *verifier) VerificationRequested(ctx context.Context, txn id.VerificationTransactionID, from id.UserID, fromDevice id.DeviceID) {
	v.track(txn, from, fromDevice, false)
	actx, cancel := context.WithTimeout(ctx, allowTimeout)
	allowed := v.opts.Allow != nil && v.opts.Allow(actx, from)
	cancel()
	log := v.m.log.With("user", from, "device", fromDevice, "txn", txn)
	if !allowed {
		log.Warn("verification request refused: the user is not allowed to verify this device")
		v.cancel(txn, event.VerificationCancelCodeUser, reasonNotAllowed)
		return
	}
	log.Info("verification request accepted")
	if err := v.vh.AcceptVerification(ctx, txn); err != nil {
		log.Error("cannot accept verification request", "err", err)
		v.cancel(txn, event.VerificationCancelCodeInternalError, "cannot accept the request")
	}
}

// VerificationReady learns which device answered; on our own request, it starts the SAS. It
// runs with the helper's lock held, so StartSAS waits for a goroutine.
func (v *verifier) VerificationReady(ctx context.Context, txn id.VerificationTransactionID, device id.DeviceID, supportsSAS, _ bool, _ *verificationhelper.QRCode) {
	v.mu.Lock()
	vr := v.txns[txn]
	if vr != nil {
		vr.device = device
	}
	v.mu.Unlock()
	if vr == nil || !vr.ours {
		return // they asked: they start the SAS
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		if !supportsSAS {
			v.cancel(txn, event.VerificationCancelCodeUnknownMethod, "the other device cannot compare emojis or numbers (SAS)")
			return
		}
		if err := v.vh.StartSAS(ctx, txn); err != nil {
			v.m.log.Error("cannot start SAS verification", "user", vr.with, "txn", txn, "err", err)
			v.cancel(txn, event.VerificationCancelCodeInternalError, "cannot start SAS")
		}
	}()
}

// ShowSAS hands the SAS to Confirm, in a goroutine: the callback runs with the helper's lock
// held, while a sync response is processed, and Confirm may wait for a person.
func (v *verifier) ShowSAS(ctx context.Context, txn id.VerificationTransactionID, emojis []rune, names []string, decimals []int) {
	sas := SAS{TxnID: txn}
	var cctx context.Context
	v.mu.Lock()
	vr := v.txns[txn]
	if vr != nil {
		var stop context.CancelFunc
		cctx, stop = context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
		vr.stop = stop
		sas.With, sas.Device = vr.with, vr.device
	}
	v.mu.Unlock()
	if vr == nil {
		return
	}
	for i, e := range emojis {
		sas.Emojis = append(sas.Emojis, Emoji{Char: string(e), Name: names[i]})
	}
	copy(sas.Decimals[:], decimals)
	go v.confirm(cctx, sas)
}

// confirm asks Confirm and answers the other side.
func (v *verifier) confirm(ctx context.Context, sas SAS) {
	ok := v.opts.Confirm(ctx, sas)
	if ctx.Err() != nil {
		return // cancelled or timed out meanwhile
	}
	log := v.m.log.With("user", sas.With, "device", sas.Device, "txn", sas.TxnID)
	if !ok {
		log.Warn("verification: the SAS does not match; cancelling")
		v.cancel(sas.TxnID, event.VerificationCancelCodeSASMismatch, reasonMismatch)
		return
	}
	if err := v.vh.ConfirmSAS(ctx, sas.TxnID); err != nil {
		if ctx.Err() != nil {
			return // the other side cancelled while we confirmed
		}
		log.Error("verification: cannot confirm the SAS", "err", err)
		v.cancel(sas.TxnID, event.VerificationCancelCodeInternalError, "cannot confirm: "+err.Error())
		return
	}
	v.confirmedSAS(ctx, sas.TxnID)
	v.afterMAC(ctx, sas.TxnID)
}

// VerificationDone: both sides confirmed and checked each other's keys; mautrix has marked the
// device Verified.
func (v *verifier) VerificationDone(ctx context.Context, txn id.VerificationTransactionID, _ event.VerificationMethod) {
	if vr, ok := v.get(txn); ok {
		v.m.log.Info("device verified", "user", vr.with, "device", vr.device, "txn", txn)
		v.afterMAC(ctx, txn)
	}
	v.finish(txn, nil)
}

// VerificationCancelled: either side cancelled (the helper calls it for its own cancellations
// too).
func (v *verifier) VerificationCancelled(ctx context.Context, txn id.VerificationTransactionID, code event.VerificationCancelCode, reason string) {
	vr, ok := v.get(txn)
	if !ok {
		return
	}
	v.m.log.Warn("verification cancelled", "user", vr.with, "device", vr.device, "txn", txn, "code", code, "reason", reason)
	if strings.Contains(reason, crypto.ErrUserSigningKeyNotCached.Error()) {
		v.m.log.Warn("verification: their device is Verified here, but this device cannot sign their cross-signing identity; Bootstrap or Recover gives it the keys to", "user", vr.with)
	}
	v.finish(txn, &CancelledError{With: vr.with, Code: code, Reason: reason})
}

// afterMAC runs when our MAC is sent or theirs checked, and once both are (the helper has then
// marked their device Verified, before it sends its done), drops the outbound room keys of
// the encrypted rooms shared with them, if keys go to trusted devices only: their device,
// refused keys so far, gets the next ones. Doing so this early means a message sent right
// after the verification ends already reaches them.
func (v *verifier) afterMAC(ctx context.Context, txn id.VerificationTransactionID) {
	mach := v.m.mach
	if mach.SendKeysMinTrust <= id.TrustStateUnset {
		return
	}
	vr, ok := v.get(txn)
	if !ok || vr.rekeyed {
		return
	}
	dev, err := mach.CryptoStore.GetDevice(ctx, vr.with, vr.device)
	if err != nil || dev == nil || dev.Trust != id.TrustStateVerified {
		return
	}
	v.mu.Lock()
	if cur := v.txns[txn]; cur != nil {
		cur.rekeyed = true
	}
	v.mu.Unlock()
	rooms, err := mach.StateStore.FindSharedRooms(ctx, vr.with)
	if err != nil {
		v.m.log.Error("verification: cannot find the rooms shared with a verified user; they get new keys later", "user", vr.with, "err", err)
		return
	}
	for _, room := range rooms {
		if err := mach.CryptoStore.RemoveOutboundGroupSession(ctx, room); err != nil {
			v.m.log.Error("verification: cannot start a new room key", "room", room, "err", err)
		}
	}
}

// track records a verification in progress.
func (v *verifier) track(txn id.VerificationTransactionID, with id.UserID, device id.DeviceID, ours bool) *verification {
	vr := &verification{with: with, device: device, ours: ours, result: make(chan error, 1)}
	v.mu.Lock()
	v.txns[txn] = vr
	v.mu.Unlock()
	return vr
}

// get returns a copy of a verification in progress.
func (v *verifier) get(txn id.VerificationTransactionID) (verification, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if vr := v.txns[txn]; vr != nil {
		return *vr, true
	}
	return verification{}, false
}

// await waits for the outcome of a verification we requested.
func (v *verifier) await(ctx context.Context, txn id.VerificationTransactionID, vr *verification) error {
	timeout := time.NewTimer(verifyTimeout)
	defer timeout.Stop()
	select {
	case err := <-vr.result:
		return err
	case <-ctx.Done():
		v.cancel(txn, event.VerificationCancelCodeUser, "the verification was abandoned")
		return ctx.Err()
	case <-timeout.C:
		v.cancel(txn, event.VerificationCancelCodeTimeout, "verification timed out")
		return &CancelledError{With: vr.with, Code: event.VerificationCancelCodeTimeout, Reason: "verification timed out"}
	}
}

// finish ends a verification with its outcome. Only the first outcome counts.
func (v *verifier) finish(txn id.VerificationTransactionID, err error) {
	v.mu.Lock()
	vr := v.txns[txn]
	delete(v.txns, txn)
	v.mu.Unlock()
	if vr == nil {
		return
	}
	if vr.stop != nil { // no one sets it once vr is out of v.txns
		vr.stop()
	}
	vr.result <- err
}

// cancel cancels a verification from our side and ends it.
func (v *verifier) cancel(txn id.VerificationTransactionID, code event.VerificationCancelCode, reason string) {
	vr, ok := v.get(txn)
	ctx, done := context.WithTimeout(context.Background(), allowTimeout)
	defer done()
	if err := v.vh.CancelVerification(ctx, txn, code, reason); err != nil && !errors.Is(err, verificationhelper.ErrUnknownVerificationTransaction) {
		v.m.log.Warn("verification: cannot send the cancellation", "txn", txn, "err", err)
	}
	if ok {
		v.finish(txn, &CancelledError{With: vr.with, Code: code, Reason: reason})
	}
}

// lockedStore is mautrix's in-memory verification store with a lock of its own: Verify writes
// to it outside the helper's lock.
type lockedStore struct {
	mu sync.Mutex
	s  *verificationhelper.InMemoryVerificationStore
}

var _ verificationhelper.VerificationStore = (*lockedStore)(nil)

func (l *lockedStore) DeleteVerification(ctx context.Context, txn id.VerificationTransactionID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.DeleteVerification(ctx, txn)
}

func (l *lockedStore) GetVerificationTransaction(ctx context.Context, txn id.VerificationTransactionID) (verificationhelper.VerificationTransaction, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.GetVerificationTransaction(ctx, txn)
}

func (l *lockedStore) SaveVerificationTransaction(ctx context.Context, txn verificationhelper.VerificationTransaction) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SaveVerificationTransaction(ctx, txn)
}

func (l *lockedStore) FindVerificationTransactionForUserDevice(ctx context.Context, user id.UserID, device id.DeviceID) (verificationhelper.VerificationTransaction, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.FindVerificationTransactionForUserDevice(ctx, user, device)
}

func (l *lockedStore) GetAllVerificationTransactions(ctx context.Context) ([]verificationhelper.VerificationTransaction, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.GetAllVerificationTransactions(ctx)
}
