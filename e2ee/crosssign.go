package e2ee

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/crypto/ssss"
	"maunium.net/go/mautrix/crypto/utils"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Errors of Bootstrap and Recover that callers branch on.
var (
	// ErrAlreadyBootstrapped: the account has cross-signing keys already (from this program or
	// another client). Recover with the account's recovery key instead, or Bootstrap with
	// BootstrapOptions.Reset to replace them.
	ErrAlreadyBootstrapped = errors.New("e2ee: the account has cross-signing keys already (Recover with its recovery key, or Bootstrap with Reset)")
	// ErrNotBootstrapped: the account has no cross-signing keys or no secret storage to recover
	// from. Bootstrap it first, on any one device.
	ErrNotBootstrapped = errors.New("e2ee: the account has no cross-signing keys in secret storage (Bootstrap it first)")
	// ErrWrongRecoveryKey: the recovery key is malformed or is not the account's. Nothing was
	// changed.
	ErrWrongRecoveryKey = errors.New("e2ee: wrong recovery key")
	// ErrAuthRejected: the homeserver refused the authentication for uploading cross-signing
	// keys (a wrong password, or none given where one is needed). Nothing was changed.
	ErrAuthRejected = errors.New("e2ee: the homeserver refused the authentication for cross-signing keys")
)

// UIA answers a homeserver's user-interactive authentication, which it asks for before it
// accepts new cross-signing keys.
type UIA interface {
	// Auth returns the auth object to send for one of the flows the server offers.
	Auth(ctx context.Context, flows *mautrix.RespUserInteractive) (any, error)
}

// UIAFunc adapts a function to UIA.
type UIAFunc func(ctx context.Context, flows *mautrix.RespUserInteractive) (any, error)

// Auth calls f.
func (f UIAFunc) Auth(ctx context.Context, flows *mautrix.RespUserInteractive) (any, error) {
	return f(ctx, flows)
}

// PasswordAuth authenticates with the account's password (m.login.password), which is what
// Synapse and Dendrite ask for. user is a localpart or a full user ID.
func PasswordAuth(user, password string) UIA {
	return UIAFunc(func(_ context.Context, flows *mautrix.RespUserInteractive) (any, error) {
		offered := slices.ContainsFunc(flows.Flows, func(f mautrix.UIAFlow) bool {
			return len(f.Stages) == 1 && f.Stages[0] == mautrix.AuthTypePassword
		})
		if !offered {
			return nil, fmt.Errorf("e2ee: the homeserver does not offer password authentication (flows %v)", flows.Flows)
		}
		return passwordAuth{
			Type:       mautrix.AuthTypePassword,
			Session:    flows.Session,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
			User:       user, // the field before identifier, which some servers still read
			Password:   password,
		}, nil
	})
}

type passwordAuth struct {
	Type       mautrix.AuthType       `json:"type"`
	Session    string                 `json:"session,omitempty"`
	Identifier mautrix.UserIdentifier `json:"identifier"`
	User       string                 `json:"user"`
	Password   string                 `json:"password"`
}

// BootstrapOptions configure Bootstrap. The zero value sets up an account that has no
// cross-signing keys yet.
type BootstrapOptions struct {
	// Reset replaces cross-signing keys, secret storage and key backup the account has already.
	// Other users' verification of the account is lost, the old recovery key stops working,
	// and history backed up so far stays readable only with the old recovery key.
	Reset bool
}

// Bootstrap makes this device the first of its account with cross-signing and key backup:
// it creates the account's cross-signing keys and publishes them (auth answers the
// homeserver's authentication; nil if it asks for none), signs this device with them, creates
// a key backup that from then on receives the room keys of every device that has the backup
// key, and puts the cross-signing and backup keys into secret storage on the homeserver,
// encrypted with a new recovery key.
//
// It returns the recovery key, 48 characters in groups of four. Show it once; it is the only
// way for a new device (Recover) to read history and be trusted without an older device.
//
// An account with cross-signing keys already gives ErrAlreadyBootstrapped unless opts.Reset;
// a refused authentication gives ErrAuthRejected with nothing changed. Should Bootstrap fail
// after the keys were published, the account has cross-signing but no working recovery key:
// Bootstrap again with Reset.
func (m *Machine) Bootstrap(ctx context.Context, auth UIA, opts BootstrapOptions) (recoveryKey string, err error) {
	if err := m.crossMu.lock(ctx); err != nil { // mautrix writes the same cross-signing state while it processes a sync
		return "", fmt.Errorf("e2ee: %w", err)
	}
	defer m.crossMu.unlock()
	if !opts.Reset {
		master, _, err := m.publishedKeys(ctx)
		if err != nil {
			return "", fmt.Errorf("e2ee: bootstrap: %w", err)
		}
		if master != "" {
			return "", ErrAlreadyBootstrapped
		}
	}
	keys, err := m.mach.GenerateCrossSigningKeys()
	if err != nil {
		return "", fmt.Errorf("e2ee: bootstrap: %w", err)
	}
	// Publishing comes first: it is the step that needs the password, and when it fails
	// nothing on the homeserver has changed, not even the secret storage of a Reset.
	if err := m.publishCrossSigningKeys(ctx, keys, auth); err != nil {
		return "", err
	}
	seeds := keys.Seeds()
	if err := m.saveCrossSigningKeys(ctx, seeds); err != nil {
		return "", err
	}
	if err := m.signOwnDevice(ctx); err != nil {
		return "", fmt.Errorf("e2ee: bootstrap: %w", err)
	}

	key, err := ssss.NewKey("")
	if err != nil {
		return "", fmt.Errorf("e2ee: bootstrap: recovery key: %w", err)
	}
	if err := m.mach.SSSS.SetKeyData(ctx, key.ID, key.Metadata); err != nil {
		return "", fmt.Errorf("e2ee: bootstrap: secret storage: %w", err)
	}
	for _, s := range []struct {
		typ  event.Type
		seed []byte
	}{
		{event.AccountDataCrossSigningMaster, seeds.MasterKey},
		{event.AccountDataCrossSigningSelf, seeds.SelfSigningKey},
		{event.AccountDataCrossSigningUser, seeds.UserSigningKey},
	} {
		if err := m.mach.SSSS.SetEncryptedAccountData(ctx, s.typ, s.seed, key); err != nil {
			return "", fmt.Errorf("e2ee: bootstrap: store %s in secret storage: %w", s.typ.Type, err)
		}
	}
	if err := m.createBackup(ctx, keys, key); err != nil {
		return "", err
	}
	// The default key last: clients (and Recover) look for it, and everything it unlocks is
	// in place now.
	if err := m.mach.SSSS.SetDefaultKeyID(ctx, key.ID); err != nil {
		return "", fmt.Errorf("e2ee: bootstrap: secret storage: %w", err)
	}
	m.log.Info("cross-signing and key backup set up", "master_key", keys.MasterKey.PublicKey(), "backup", m.backupVersion())
	return key.RecoveryKey(), nil
}

// publishCrossSigningKeys uploads the public cross-signing keys, answering the homeserver's
// authentication with auth.
func (m *Machine) publishCrossSigningKeys(ctx context.Context, keys *crypto.CrossSigningKeysCache, auth UIA) error {
	var authErr error
	var callback mautrix.UIACallback
	if auth != nil {
		callback = func(flows *mautrix.RespUserInteractive) any {
			a, err := auth.Auth(ctx, flows)
			if err != nil {
				authErr = err
				return nil
			}
			return a
		}
	}
	err := m.mach.PublishCrossSigningKeys(ctx, keys, callback)
	if authErr != nil {
		return fmt.Errorf("e2ee: bootstrap: authenticate: %w", authErr)
	}
	var he mautrix.HTTPError
	if errors.As(err, &he) && (he.IsStatus(http.StatusUnauthorized) || errors.Is(err, mautrix.MForbidden)) {
		return fmt.Errorf("%w: %w", ErrAuthRejected, err)
	}
	if err != nil {
		return fmt.Errorf("e2ee: bootstrap: publish cross-signing keys: %w", err)
	}
	return nil
}

// Recover makes this device, new or old, a full member of its account with the account's
// recovery key: it reads the cross-signing keys from secret storage and signs this device
// (so that the account's other devices, and other users who verified the account, trust it,
// and it trusts them), restores the room keys from the key backup (so that history from
// before this device existed can be read), and backs up this device's own room keys from then
// on.
//
// A malformed key, or one that is not the account's, gives ErrWrongRecoveryKey; an account
// that was never set up (Bootstrap) gives ErrNotBootstrapped. In both cases nothing changes.
func (m *Machine) Recover(ctx context.Context, recoveryKey string) error {
	if err := m.crossMu.lock(ctx); err != nil { // mautrix writes the same cross-signing state while it processes a sync
		return fmt.Errorf("e2ee: %w", err)
	}
	defer m.crossMu.unlock()
	if utils.DecodeBase58RecoveryKey(strings.TrimSpace(recoveryKey)) == nil {
		return fmt.Errorf("%w: not a recovery key (48 base58 characters in groups of four, with a checksum)", ErrWrongRecoveryKey)
	}
	keyID, meta, err := m.mach.SSSS.GetDefaultKeyData(ctx)
	if errors.Is(err, ssss.ErrNoDefaultKeyID) || errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("%w: %w", ErrNotBootstrapped, err)
	}
	if err != nil {
		return fmt.Errorf("e2ee: recover: read secret storage: %w", err)
	}
	key, err := meta.VerifyRecoveryKey(keyID, strings.TrimSpace(recoveryKey))
	switch {
	case errors.Is(err, ssss.ErrUnverifiableKey):
		// Metadata from an old client, without a check value: decrypting the keys below
		// tells whether the recovery key is right.
	case errors.Is(err, ssss.ErrInvalidRecoveryKey), errors.Is(err, ssss.ErrIncorrectSSSSKey):
		return fmt.Errorf("%w: %w", ErrWrongRecoveryKey, err)
	case err != nil:
		return fmt.Errorf("e2ee: recover: check recovery key: %w", err)
	}
	seeds, err := m.crossSigningKeysFromSSSS(ctx, key)
	if err != nil {
		return err
	}
	published, _, err := m.publishedKeys(ctx)
	if err != nil {
		return fmt.Errorf("e2ee: recover: %w", err)
	}
	if published == "" {
		return fmt.Errorf("%w: no master key published", ErrNotBootstrapped)
	}
	decoded, err := seeds.Decode()
	if err != nil {
		return fmt.Errorf("e2ee: recover: cross-signing keys in secret storage: %w", err)
	}
	if decoded.MasterKey.PublicKey() != published {
		return fmt.Errorf("e2ee: recover: secret storage holds master key %s, but the account's is %s (were the keys reset by another client?)",
			decoded.MasterKey.PublicKey(), published)
	}

	// The key is right and the keys are the account's: from here on, things change.
	if err := m.mach.ImportCrossSigningKeys(seeds); err != nil {
		return fmt.Errorf("e2ee: recover: %w", err)
	}
	if err := m.saveCrossSigningKeys(ctx, seeds); err != nil {
		return err
	}
	if err := m.signOwnDevice(ctx); err != nil {
		return fmt.Errorf("e2ee: recover: %w", err)
	}
	if err := m.restoreBackup(ctx, key); err != nil {
		return fmt.Errorf("e2ee: recover: cross-signing recovered, but not the key backup: %w", err)
	}
	m.log.Info("recovered cross-signing and key backup", "master_key", published, "backup", m.backupVersion())
	return nil
}

// crossSigningKeysFromSSSS decrypts the three cross-signing seeds from secret storage.
func (m *Machine) crossSigningKeysFromSSSS(ctx context.Context, key *ssss.Key) (crypto.CrossSigningSeeds, error) {
	var seeds crypto.CrossSigningSeeds
	for _, s := range []struct {
		typ  event.Type
		seed *[]byte
	}{
		{event.AccountDataCrossSigningMaster, (*[]byte)(&seeds.MasterKey)},
		{event.AccountDataCrossSigningSelf, (*[]byte)(&seeds.SelfSigningKey)},
		{event.AccountDataCrossSigningUser, (*[]byte)(&seeds.UserSigningKey)},
	} {
		data, err := m.mach.SSSS.GetDecryptedAccountData(ctx, s.typ, key)
		switch {
		case errors.Is(err, ssss.ErrKeyDataMACMismatch):
			return seeds, fmt.Errorf("%w: it does not decrypt %s", ErrWrongRecoveryKey, s.typ.Type)
		case errors.Is(err, mautrix.MNotFound), errors.Is(err, ssss.ErrNotEncryptedForKey):
			return seeds, fmt.Errorf("%w: no %s for the default key: %w", ErrNotBootstrapped, s.typ.Type, err)
		case err != nil:
			return seeds, fmt.Errorf("e2ee: recover: read %s from secret storage: %w", s.typ.Type, err)
		}
		*s.seed = data
	}
	return seeds, nil
}

// signOwnDevice signs this device with the self-signing key and the master key with this
// device, and refreshes what the crypto store knows about the account's keys.
func (m *Machine) signOwnDevice(ctx context.Context) error {
	if err := m.mach.SignOwnDevice(ctx, m.mach.OwnIdentity()); err != nil {
		return fmt.Errorf("sign this device: %w", err)
	}
	if err := m.mach.SignOwnMasterKey(ctx); err != nil {
		return fmt.Errorf("sign the master key: %w", err)
	}
	// Store the published keys and signatures as the homeserver has them, so that trust is
	// resolved from them (mautrix keeps its own copy only of the signatures it made).
	if _, err := m.mach.FetchKeys(ctx, []id.UserID{m.c.UserID()}, true); err != nil {
		return fmt.Errorf("read back the account's keys: %w", err)
	}
	return nil
}

// publishedKeys returns the account's master and self-signing keys as the homeserver has
// them, "" when there are none.
func (m *Machine) publishedKeys(ctx context.Context) (master, selfSigning id.Ed25519, err error) {
	own := m.c.UserID()
	resp, err := m.mx.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{own: {}}})
	if err != nil {
		return "", "", fmt.Errorf("query the account's keys: %w", err)
	}
	mk, ssk := resp.MasterKeys[own], resp.SelfSigningKeys[own]
	return mk.FirstKey(), ssk.FirstKey(), nil
}

// Cross-signing private keys live only in memory in mautrix; they are kept in the crypto
// store too, encrypted with the pickle key, so that a restarted program can still sign (and
// serve them to the account's verified devices that ask, as the spec's secret sharing says).
var crossSigningSecrets = [3]id.Secret{id.SecretXSMaster, id.SecretXSSelfSigning, id.SecretXSUserSigning}

func (m *Machine) saveCrossSigningKeys(ctx context.Context, seeds crypto.CrossSigningSeeds) error {
	err := m.c.Database().DoTxn(ctx, nil, func(ctx context.Context) error {
		for i, seed := range [3][]byte{seeds.MasterKey, seeds.SelfSigningKey, seeds.UserSigningKey} {
			if err := m.mach.CryptoStore.PutSecret(ctx, crossSigningSecrets[i], base64.RawStdEncoding.EncodeToString(seed)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("e2ee: store cross-signing keys: %w", err)
	}
	return nil
}

// loadCrossSigningKeys gives mautrix the cross-signing keys kept in the crypto store, if any.
func (m *Machine) loadCrossSigningKeys(ctx context.Context) error {
	var seeds [3][]byte
	for i, name := range crossSigningSecrets {
		s, err := m.mach.CryptoStore.GetSecret(ctx, name)
		if err != nil {
			return fmt.Errorf("e2ee: read cross-signing keys: %w", err)
		}
		if s == "" {
			return nil // never bootstrapped or recovered on this device
		}
		if seeds[i], err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			return fmt.Errorf("e2ee: read cross-signing keys: %s: %w", name, err)
		}
	}
	err := m.mach.ImportCrossSigningKeys(crypto.CrossSigningSeeds{MasterKey: seeds[0], SelfSigningKey: seeds[1], UserSigningKey: seeds[2]})
	if err != nil {
		return fmt.Errorf("e2ee: read cross-signing keys: %w", err)
	}
	return nil
}

// Status is what an operator checks about a device's encryption setup.
type Status struct {
	DeviceID      id.DeviceID
	Fingerprint   string              // this device's Ed25519 key, as clients show it
	CrossSigning  bool                // the account has cross-signing keys on the homeserver
	DeviceSigned  bool                // this device is signed by the account's self-signing key, so the account's other devices trust it
	CanSign       bool                // this device holds the account's cross-signing keys (after Bootstrap or Recover) and can sign
	BackupVersion id.KeyBackupVersion // the key backup this device uploads room keys to; "" when it has none
	NotBackedUp   int                 // room keys this device holds that are not in that backup yet
}

// Status reports the device's cross-signing and key backup state, as the homeserver and the
// crypto store have it. Like Bootstrap and Recover, it waits for the Syncer's processing of
// the moment, and the Syncer for it; that wait, too, ends with ctx.
func (m *Machine) Status(ctx context.Context) (Status, error) {
	if err := m.crossMu.lock(ctx); err != nil { // mautrix writes the same cross-signing state while it processes a sync
		return Status{}, fmt.Errorf("e2ee: %w", err)
	}
	defer m.crossMu.unlock()
	own := m.c.UserID()
	st := Status{DeviceID: m.c.DeviceID(), Fingerprint: m.Fingerprint(), BackupVersion: m.backupVersion()}
	resp, err := m.mx.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{own: {}}})
	if err != nil {
		return st, fmt.Errorf("e2ee: status: query the account's keys: %w", err)
	}
	mk, ssk := resp.MasterKeys[own], resp.SelfSigningKeys[own]
	master, selfSigning := mk.FirstKey(), ssk.FirstKey()
	st.CrossSigning = master != "" && selfSigning != ""
	if st.CrossSigning {
		if dev, ok := resp.DeviceKeys[own][st.DeviceID]; ok {
			st.DeviceSigned, _ = signatures.VerifySignatureJSON(dev, own, selfSigning.String(), selfSigning)
		}
		if keys := m.mach.CrossSigningKeys; keys != nil {
			st.CanSign = keys.MasterKey.PublicKey() == master && keys.SelfSigningKey.PublicKey() == selfSigning
		}
	}
	if st.NotBackedUp, err = m.countNotBackedUp(ctx, st.BackupVersion); err != nil {
		return st, err
	}
	return st, nil
}
