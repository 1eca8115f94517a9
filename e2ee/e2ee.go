package e2ee

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/samtalhq/samtal/matrix"
)

// Trust is how far a device must be trusted: to be given room keys (Options.ShareWith), or to
// have its messages handed to handlers (Options.AcceptFrom).
type Trust int

const (
	// AllDevices trusts every device of a room's members that is not blacklisted. It is the
	// default, for both directions: in rooms shared between agencies most people have never
	// verified their devices, and refusing them would make the bot unreadable to them and
	// deaf to them. A bot that acts on commands checks Event.Mautrix.TrustState itself, or
	// raises AcceptFrom.
	AllDevices Trust = iota
	// CrossSigned trusts devices signed by their owner's cross-signing key (which the bot has
	// seen before, or verified).
	CrossSigned
	// Verified trusts only devices whose owner the bot has verified, directly or through
	// cross-signing.
	Verified
)

// String names the policy.
func (t Trust) String() string {
	switch t {
	case AllDevices:
		return "AllDevices"
	case CrossSigned:
		return "CrossSigned"
	case Verified:
		return "Verified"
	}
	return fmt.Sprintf("Trust(%d)", int(t))
}

func (t Trust) minState() (id.TrustState, error) {
	switch t {
	case AllDevices:
		return id.TrustStateUnset, nil
	case CrossSigned:
		return id.TrustStateCrossSignedTOFU, nil
	case Verified:
		return id.TrustStateCrossSignedVerified, nil
	}
	return 0, fmt.Errorf("e2ee: unknown trust policy %d", int(t))
}

// Options configure encryption for a client. PickleKey is required.
type Options struct {
	// PickleKey encrypts the keys in the crypto store: at least 16 bytes, from configuration,
	// the environment, or a file (LoadOrCreatePickleKey). Losing it loses the device's keys.
	PickleKey  []byte
	ShareWith  Trust        // whose devices get room keys for what the client sends; default AllDevices
	AcceptFrom Trust        // whose messages the client's Syncer hands out; default AllDevices
	Logger     *slog.Logger // nil means the client's logger
}

// Errors Enable returns when the crypto store cannot be used; each says what to do.
var (
	// ErrWrongPickleKey: the crypto store was written with another pickle key. Use the key it
	// was written with; without it the device's keys cannot be read, and only Reset helps.
	ErrWrongPickleKey = errors.New("e2ee: the pickle key does not open this crypto store (use the key it was created with, or Reset to start a new device)")
	// ErrKeysGoneFromServer: the homeserver has no keys for this device although the store says
	// they were uploaded (the device was deleted or the server restored from a backup). Reset
	// and log in as a new device; history stays readable through key backup.
	ErrKeysGoneFromServer = errors.New("e2ee: the homeserver lost this device's keys (the device was deleted or the server restored); Reset and log in as a new device")
	// ErrStoreLost: the server has keys for this device but the local store has none (the
	// database was replaced, or another program uses the same device). Reset and log in as a
	// new device; never run two programs as one device.
	ErrStoreLost = errors.New("e2ee: this device's keys are on the server but not in the crypto store (another database or program uses this device?); Reset and log in as a new device")
	// ErrUntrustedSender wraps a decryption refused by Options.AcceptFrom.
	ErrUntrustedSender = errors.New("e2ee: sender's device is not trusted enough")
)

// Machine is encryption enabled on a client. It implements matrix.Encryption.
type Machine struct {
	c      *matrix.Client
	mx     *mautrix.Client
	helper *cryptohelper.CryptoHelper
	mach   *crypto.OlmMachine
	opts   Options
	accept id.TrustState
	log    *slog.Logger

	mu     sync.Mutex
	synced bool      // a Syncer has fed us a sync response
	verify *verifier // set by EnableVerification

	roomsMu sync.Mutex
	rooms   map[id.RoomID]*roomKeys // what this process knows of each room it encrypts for (rooms.go)
	missing missingKeys             // room keys found missing, to ask for (keyrequest.go)
	stats   counters

	db *dbutil.Database // this package's tables

	noMemberChecks bool // benchmarks only (export_test.go): the baseline without them

	// crossMu keeps Bootstrap, Recover and Status apart from sync processing: mautrix's
	// OlmMachine updates its cached cross-signing keys while it processes device lists,
	// without a lock of its own (a data race the race detector showed). Its lock gives up when
	// the caller's context ends (crosslock.go).
	crossMu ctxMutex

	backup keyBackup // server-side key backup: key, version, uploader (backup.go)

	// e2ee flakes and stop part:
	senderKeys senderKeysAsked // sending devices whose keys were asked for (senderkeys.go)
}

var _ matrix.Encryption = (*Machine)(nil)

// minPickleKey is the shortest pickle key Enable accepts.
const minPickleKey = 16

// Enable turns on end-to-end encryption for c: the crypto store goes into c's database (one
// Olm account per session and device), the device's keys are uploaded if they are new, and from
// then on c encrypts what it sends into encrypted rooms and its Syncer decrypts what arrives.
//
// On a device that was set up with Bootstrap or Recover, Enable also takes up the account's
// cross-signing keys and the key backup again; call Close when done, to stop the backup
// uploader.
//
// Enable checks that the local store and the homeserver agree about the device and fails with
// ErrWrongPickleKey, ErrKeysGoneFromServer or ErrStoreLost when they do not.
func Enable(ctx context.Context, c *matrix.Client, opts Options) (*Machine, error) {
	if len(opts.PickleKey) < minPickleKey {
		return nil, fmt.Errorf("e2ee: the pickle key must be at least %d bytes (see LoadOrCreatePickleKey)", minPickleKey)
	}
	shareMin, err := opts.ShareWith.minState()
	if err != nil {
		return nil, err
	}
	acceptMin, err := opts.AcceptFrom.minState()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = c.Logger()
	}
	mx := c.Mautrix()
	helper, err := cryptohelper.NewCryptoHelper(mx, opts.PickleKey, c.Database())
	if err != nil {
		return nil, fmt.Errorf("e2ee: %w", err)
	}
	m := &Machine{c: c, mx: mx, helper: helper, opts: opts, accept: acceptMin, log: opts.Logger.With("component", "e2ee"),
		rooms: map[id.RoomID]*roomKeys{}}
	helper.DBAccountID = accountID(c)
	helper.DecryptErrorCallback = func(evt *event.Event, err error) {
		m.log.Debug("mautrix could not decrypt an event (the Syncer retries it)", "room", evt.RoomID, "event", evt.ID, "err", err)
	}
	// mautrix decrypts on its own while it processes a sync response (and requests missing
	// keys); our Syncer hands out events itself, so mautrix's copies go nowhere, except
	// verification events, which its verification helper listens for.
	helper.CustomPostDecrypt = m.postDecrypt
	// Schema upgrades (storage part): mautrix's stores first, under the upgrade lock.
	state, _ := mx.StateStore.(*sqlstatestore.SQLStateStore) // set by NewCryptoHelper
	if err := upgradeMautrixStores(ctx, c.Database(), state); err != nil {
		return nil, err
	}
	if err := helper.Init(ctx); err != nil {
		if !repairUnmarkedUpload(ctx, helper, mx, err) {
			return nil, classifyInitError(err)
		}
		// The upload had happened: mautrix set up nothing else before it failed, so a second
		// Init continues from the repaired account.
		if err := helper.Init(ctx); err != nil {
			return nil, classifyInitError(err)
		}
		m.log.Warn("repaired a crypto store whose first key upload was not recorded (the process died during it)")
	}
	m.mach = helper.Machine()
	// After mautrix's crypto store is set up: our schema indexes one of its tables.
	if m.db, err = upgradeDB(ctx, c.Database()); err != nil {
		return nil, err
	}
	m.mach.SendKeysMinTrust = shareMin
	// Sender device keys are fetched by this package, with the caller's context and outside
	// any transaction (senderkeys.go), not by mautrix inside handleEncryptedToDevice's.
	m.mach.DisableDecryptKeyFetching = true
	// mautrix's ratchet tracking writes a room key back after every decryption, from the copy
	// it read before, which undid a backup mark made in between (and the key counted as not
	// backed up, with nothing to upload it again). It only serves mautrix's options to ratchet
	// or delete used keys, which are off; without it a decryption writes nothing.
	m.mach.DisableRatchetTracking = true
	m.mach.AllowKeyShare = m.allowKeyShare
	if n, err := adoptRoomKeys(ctx, c); err != nil {
		m.log.Warn("could not take over the room keys of this session's earlier devices", "err", err)
	} else if n > 0 {
		m.log.Info("took over room keys from this session's earlier devices", "keys", n)
	}
	if err := m.loadCrossSigningKeys(ctx); err != nil {
		return nil, err
	}
	m.mach.SessionReceived = m.sessionReceived
	if err := m.loadBackup(ctx); err != nil {
		return nil, err
	}
	mx.Crypto = helper
	c.UseEncryption(m)
	m.log.Info("end-to-end encryption enabled", "device", c.DeviceID(), "identity", m.mach.OwnIdentity().IdentityKey,
		"share_with", opts.ShareWith, "accept_from", opts.AcceptFrom)
	return m, nil
}

// postDecrypt receives what mautrix decrypts on its own while it processes a sync response.
// Our Syncer hands out events itself, so these copies go nowhere, except in-room verification
// events, which mautrix's verification helper listens for on the mautrix syncer.
func (m *Machine) postDecrypt(ctx context.Context, evt *event.Event) {
	isVerification := strings.HasPrefix(evt.Type.Type, "m.key.verification.")
	if msg, ok := evt.Content.Parsed.(*event.MessageEventContent); ok && msg.MsgType == event.MsgVerificationRequest {
		isVerification = true
	}
	if !isVerification {
		return
	}
	if ds, ok := m.mx.Syncer.(mautrix.DispatchableSyncer); ok {
		ds.Dispatch(ctx, evt)
	}
}

// accountID keys the Olm account in the shared crypto tables: one per session and device, so
// that a new login (a new device) never reuses the old device's account.
func accountID(c *matrix.Client) string {
	return c.SessionName() + "/" + c.UserID().String() + "/" + c.DeviceID().String()
}

// repairUnmarkedUpload handles a process that died during its very first key upload, after
// the upload but before recording it: the server holds the device's keys, the store says they
// were never uploaded, and mautrix refuses to go on. When the keys on the server are exactly
// this account's own, recording the upload is the truth, not a guess.
func repairUnmarkedUpload(ctx context.Context, helper *cryptohelper.CryptoHelper, mx *mautrix.Client, initErr error) bool {
	// Only this error comes after Init made the machine: helper.Machine panics before that
	// (an Init that failed early, such as on a canceled context).
	if !strings.Contains(initErr.Error(), "not marked as shared, but there are keys on the server") {
		return false
	}
	mach := helper.Machine()
	if mach == nil {
		return false
	}
	resp, err := mx.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: map[id.UserID]mautrix.DeviceIDList{mx.UserID: {mx.DeviceID}}})
	if err != nil {
		return false
	}
	device, ok := resp.DeviceKeys[mx.UserID][mx.DeviceID]
	own := mach.OwnIdentity()
	if !ok || device.Keys.GetEd25519(mx.DeviceID) != own.SigningKey || device.Keys.GetCurve25519(mx.DeviceID) != own.IdentityKey {
		return false // someone else's keys: a real ErrStoreLost
	}
	acc := mach.GetAccount()
	acc.Shared = true
	acc.Internal.MarkKeysAsPublished()
	return mach.CryptoStore.PutAccount(ctx, acc) == nil
}

// adoptRoomKeys copies the room keys (inbound Megolm sessions) that earlier devices of the same
// session received into this device's account, so that a device that replaced a lost one
// (Reset) still reads the history its predecessor could. Keys are not device-bound: this is
// what importing a key backup does too. It returns how many keys were copied.
func adoptRoomKeys(ctx context.Context, c *matrix.Client) (int64, error) {
	db := c.Database()
	rows, err := db.Query(ctx, "SELECT * FROM crypto_megolm_inbound_session WHERE 1 = 0")
	if err != nil {
		return 0, err
	}
	cols, err := rows.Columns()
	rows.Close()
	if err != nil {
		return 0, err
	}
	sel := make([]string, len(cols))
	for i, col := range cols {
		if col == "account_id" {
			sel[i] = "$1"
		} else {
			sel[i] = col
		}
	}
	// Earlier accounts of this session and user: "session/user/" and a device ID (which has no
	// "/"), matched in Go rather than with a prefix in SQL, so that another session whose name
	// starts like ours never matches.
	prefix := c.SessionName() + "/" + c.UserID().String() + "/"
	ids, err := db.Query(ctx, "SELECT DISTINCT account_id FROM crypto_megolm_inbound_session WHERE account_id <> $1", accountID(c))
	if err != nil {
		return 0, err
	}
	var earlier []string
	for ids.Next() {
		var acct string
		if err := ids.Scan(&acct); err != nil {
			ids.Close()
			return 0, err
		}
		if device, ok := strings.CutPrefix(acct, prefix); ok && device != "" && !strings.Contains(device, "/") {
			earlier = append(earlier, acct)
		}
	}
	ids.Close()
	var total int64
	for _, acct := range earlier {
		res, err := db.Exec(ctx, "INSERT INTO crypto_megolm_inbound_session ("+strings.Join(cols, ", ")+") SELECT "+strings.Join(sel, ", ")+
			" FROM crypto_megolm_inbound_session WHERE account_id = $2 ON CONFLICT DO NOTHING", accountID(c), acct)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

func classifyInitError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, olm.ErrBadMAC) || strings.Contains(msg, "bad mac"):
		return fmt.Errorf("%w: %w", ErrWrongPickleKey, err)
	case strings.Contains(msg, "keys seem to have disappeared"):
		return fmt.Errorf("%w: %w", ErrKeysGoneFromServer, err)
	case strings.Contains(msg, "not marked as shared, but there are keys on the server"),
		strings.Contains(msg, "mismatching identity key on server"):
		return fmt.Errorf("%w: %w", ErrStoreLost, err)
	}
	return fmt.Errorf("e2ee: start crypto: %w", err)
}

// Client is the client encryption is enabled on.
func (m *Machine) Client() *matrix.Client { return m.c }

// OlmMachine returns mautrix's crypto machine, for what this package does not wrap.
func (m *Machine) OlmMachine() *crypto.OlmMachine { return m.mach }

// Fingerprint is this device's Ed25519 key, as clients show it when verifying manually.
func (m *Machine) Fingerprint() string {
	return m.mach.OwnIdentity().Fingerprint()
}
