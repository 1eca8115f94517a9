package e2ee

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/samtalhq/samtal/internal/backoff"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/crypto/ssss"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Errors of key backup that callers branch on.
var (
	// ErrNoBackup: this device has no key backup to upload to. Bootstrap the account, or
	// Recover on this device.
	ErrNoBackup = errors.New("e2ee: this device has no key backup (Bootstrap the account, or Recover on this device)")
	// ErrBackupReplaced: the key backup this device uploads to was deleted or replaced on the
	// homeserver, by another client or a Bootstrap with Reset. Recover with the current
	// recovery key to use the new one.
	ErrBackupReplaced = errors.New("e2ee: the key backup was deleted or replaced on the homeserver (Recover with the current recovery key)")
)

const (
	// backupDebounce is how long the uploader waits after a new room key for more to come,
	// so that a burst of keys goes up in one request.
	backupDebounce = 2 * time.Second
	// backupBatch is how many room keys one upload request carries at most.
	backupBatch = 200
	// backupRetryMin and backupRetryMax bound the wait after a failed upload.
	backupRetryMin, backupRetryMax = 10 * time.Second, 10 * time.Minute
	// backupLookupEvery is how often one missing room key may be looked up in the backup:
	// a flood of undecryptable events must not become a flood of requests.
	backupLookupEvery = time.Minute
	// backupLookupsTracked bounds the memory the lookup limit takes.
	backupLookupsTracked = 10000
	// backupLookupTimeout bounds one lookup, which holds up the sync that needs it.
	backupLookupTimeout = 10 * time.Second
)

// keyBackup is a Machine's server-side key backup: the key and version it uploads to, the
// uploader goroutine, and when missing keys were last looked up.
type keyBackup struct {
	mu      sync.Mutex
	key     *backup.MegolmBackupKey // nil: no backup on this device
	version id.KeyBackupVersion
	kick    chan struct{} // a room key arrived; capacity 1
	stop    context.CancelFunc
	done    chan struct{}
	closed  bool

	upload sync.Mutex // one upload at a time: the uploader's and BackupNow's

	lookupMu sync.Mutex
	lookups  map[id.SessionID]time.Time
}

// BackupNow uploads the room keys this device holds that are not in its key backup yet, and
// returns how many it uploaded. New keys are uploaded in the background a few seconds after
// they arrive; BackupNow is for tests and for a clean shutdown (before Close).
//
// It returns ErrNoBackup when the device has no backup, ErrBackupReplaced when the backup
// was deleted or replaced on the homeserver.
func (m *Machine) BackupNow(ctx context.Context) (uploaded int, err error) {
	key, version := m.currentBackup()
	if key == nil {
		return 0, ErrNoBackup
	}
	m.backup.upload.Lock()
	defer m.backup.upload.Unlock()
	skip := map[id.SessionID]bool{} // keys that cannot be exported; tried again next time
	for {
		sessions, err := m.sessionsToBackUp(ctx, version, skip)
		if err != nil {
			return uploaded, err
		}
		if len(sessions) == 0 {
			return uploaded, nil
		}
		req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
		var sent []*crypto.InboundGroupSession
		for _, s := range sessions {
			data, err := m.backupData(key, s)
			if err != nil {
				m.log.Warn("cannot back up a room key", "room", s.RoomID, "session", s.ID(), "err", err)
				skip[s.ID()] = true
				continue
			}
			room, ok := req.Rooms[s.RoomID]
			if !ok {
				room = mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
				req.Rooms[s.RoomID] = room
			}
			room.Sessions[s.ID()] = data
			sent = append(sent, s)
		}
		if len(sent) == 0 {
			continue
		}
		if _, err := m.mx.PutKeysInBackup(ctx, version, req); err != nil {
			if errors.Is(err, mautrix.MWrongRoomKeysVersion) || errors.Is(err, mautrix.MNotFound) {
				return uploaded, fmt.Errorf("%w: version %s: %w", ErrBackupReplaced, version, err)
			}
			return uploaded, fmt.Errorf("e2ee: upload room keys to backup %s: %w", version, err)
		}
		for _, s := range sent {
			if err := m.markBackedUp(ctx, s, version); err != nil {
				return uploaded, fmt.Errorf("e2ee: mark room key %s as backed up: %w", s.ID(), err)
			}
		}
		uploaded += len(sent)
	}
}

// sessionsToBackUp returns up to backupBatch room keys that are not in backup version yet,
// leaving out those in skip.
func (m *Machine) sessionsToBackUp(ctx context.Context, version id.KeyBackupVersion, skip map[id.SessionID]bool) ([]*crypto.InboundGroupSession, error) {
	var batch []*crypto.InboundGroupSession
	err := m.mach.CryptoStore.GetGroupSessionsWithoutKeyBackupVersion(ctx, version).Iter(func(s *crypto.InboundGroupSession) (bool, error) {
		if !skip[s.ID()] {
			batch = append(batch, s)
		}
		return len(batch) < backupBatch, nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: read room keys to back up: %w", err)
	}
	return batch, nil
}

// backupData encrypts a room key for the backup, from its first known message index on.
func (m *Machine) backupData(key *backup.MegolmBackupKey, s *crypto.InboundGroupSession) (mautrix.ReqKeyBackupData, error) {
	first := s.Internal.FirstKnownIndex()
	exported, err := s.Internal.Export(first)
	if err != nil {
		return mautrix.ReqKeyBackupData{}, fmt.Errorf("export: %w", err)
	}
	enc, err := backup.EncryptSessionData(key, &backup.MegolmSessionData{
		Algorithm:          id.AlgorithmMegolmV1,
		ForwardingKeyChain: s.ForwardingChains,
		SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: s.SigningKey},
		SenderKey:          s.SenderKey,
		SessionKey:         string(exported),
		SharedHistory:      s.SharedHistory,
	})
	if err != nil {
		return mautrix.ReqKeyBackupData{}, fmt.Errorf("encrypt: %w", err)
	}
	raw, err := json.Marshal(enc)
	if err != nil {
		return mautrix.ReqKeyBackupData{}, err
	}
	return mautrix.ReqKeyBackupData{
		FirstMessageIndex: int(first),
		ForwardedCount:    len(s.ForwardingChains),
		// Verified only for our own keys: checking every sender's device here is not worth a
		// hint that the spec lets clients ignore.
		IsVerified:  s.SenderKey == m.mach.OwnIdentity().IdentityKey,
		SessionData: raw,
	}, nil
}

func (m *Machine) markBackedUp(ctx context.Context, s *crypto.InboundGroupSession, version id.KeyBackupVersion) error {
	if store, ok := m.mach.CryptoStore.(*crypto.SQLCryptoStore); ok {
		return store.SetGroupSessionKeyBackupVersion(ctx, s.ID(), version)
	}
	s.KeyBackupVersion = version
	return m.mach.CryptoStore.PutGroupSession(ctx, s)
}

// countNotBackedUp counts the room keys that are not in backup version: all of them when
// version is "".
func (m *Machine) countNotBackedUp(ctx context.Context, version id.KeyBackupVersion) (int, error) {
	var n int
	if store, ok := m.mach.CryptoStore.(*crypto.SQLCryptoStore); ok {
		// The condition of GetGroupSessionsWithoutKeyBackupVersion, without unpickling every
		// key to count it.
		err := store.DB.QueryRow(ctx, `SELECT COUNT(*) FROM crypto_megolm_inbound_session
			WHERE account_id = $1 AND session IS NOT NULL AND ($2 = '' OR key_backup_version != $2)`,
			store.AccountID, version).Scan(&n)
		if err != nil {
			return 0, fmt.Errorf("e2ee: count room keys not backed up: %w", err)
		}
		return n, nil
	}
	sessions := m.mach.CryptoStore.GetGroupSessionsWithoutKeyBackupVersion(ctx, version)
	if version == "" {
		sessions = m.mach.CryptoStore.GetAllGroupSessions(ctx)
	}
	err := sessions.Iter(func(*crypto.InboundGroupSession) (bool, error) {
		n++
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("e2ee: count room keys not backed up: %w", err)
	}
	return n, nil
}

// createBackup creates a new backup version whose auth data is signed by the master key and
// this device, and keeps its key in secret storage (under ssssKey) and in the crypto store.
func (m *Machine) createBackup(ctx context.Context, keys *crypto.CrossSigningKeysCache, ssssKey *ssss.Key) error {
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		return fmt.Errorf("e2ee: bootstrap: backup key: %w", err)
	}
	auth := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))}
	masterSig, err := keys.MasterKey.SignJSON(auth)
	if err != nil {
		return fmt.Errorf("e2ee: bootstrap: sign backup: %w", err)
	}
	deviceSig, err := m.mach.GetAccount().SignJSON(auth)
	if err != nil {
		return fmt.Errorf("e2ee: bootstrap: sign backup: %w", err)
	}
	auth.Signatures = signatures.Signatures{m.c.UserID(): {
		id.NewKeyID(id.KeyAlgorithmEd25519, keys.MasterKey.PublicKey().String()): masterSig,
		id.NewKeyID(id.KeyAlgorithmEd25519, m.c.DeviceID().String()):             deviceSig,
	}}
	resp, err := m.mx.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  auth,
	})
	if err != nil {
		return fmt.Errorf("e2ee: bootstrap: create key backup: %w", err)
	}
	if err := m.mach.SSSS.SetEncryptedAccountData(ctx, event.AccountDataMegolmBackupKey, key.Bytes(), ssssKey); err != nil {
		return fmt.Errorf("e2ee: bootstrap: store backup key in secret storage: %w", err)
	}
	return m.useBackup(ctx, key, resp.Version)
}

// restoreBackup reads the backup key from secret storage, imports every room key of the
// account's current backup, and makes this device upload to it.
func (m *Machine) restoreBackup(ctx context.Context, ssssKey *ssss.Key) error {
	raw, err := m.mach.SSSS.GetDecryptedAccountData(ctx, event.AccountDataMegolmBackupKey, ssssKey)
	if errors.Is(err, mautrix.MNotFound) {
		m.log.Info("the account has no key backup to restore")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read backup key from secret storage: %w", err)
	}
	key, err := backup.MegolmBackupKeyFromBytes(raw)
	if err != nil {
		return fmt.Errorf("backup key in secret storage: %w", err)
	}
	version, err := m.mach.DownloadAndStoreLatestKeyBackup(ctx, key)
	if errors.Is(err, mautrix.MNotFound) || (err == nil && version == "") {
		m.log.Warn("secret storage has a backup key, but the homeserver has no key backup")
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore room keys: %w", err)
	}
	return m.useBackup(ctx, key, version)
}

// useBackup keeps key and version in the crypto store and starts uploading to them.
func (m *Machine) useBackup(ctx context.Context, key *backup.MegolmBackupKey, version id.KeyBackupVersion) error {
	// Key and version are stored together or not at all: keys encrypted with one backup's key
	// and uploaded to another would be lost.
	old := m.mach.KeyBackupVersion()
	err := m.c.Database().DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := m.mach.CryptoStore.PutSecret(ctx, id.SecretMegolmBackupV1, base64.RawStdEncoding.EncodeToString(key.Bytes())); err != nil {
			return err
		}
		return m.mach.SetKeyBackupVersion(ctx, version)
	})
	if err != nil {
		m.mach.GetAccount().KeyBackupVersion = old
		return fmt.Errorf("e2ee: store backup key: %w", err)
	}
	m.startBackup(key, version)
	return nil
}

// loadBackup resumes uploading to the backup kept in the crypto store, if any.
func (m *Machine) loadBackup(ctx context.Context) error {
	version := m.mach.KeyBackupVersion()
	s, err := m.mach.CryptoStore.GetSecret(ctx, id.SecretMegolmBackupV1)
	if err != nil {
		return fmt.Errorf("e2ee: read backup key: %w", err)
	}
	if s == "" || version == "" {
		return nil
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return fmt.Errorf("e2ee: read backup key: %w", err)
	}
	key, err := backup.MegolmBackupKeyFromBytes(raw)
	if err != nil {
		return fmt.Errorf("e2ee: read backup key: %w", err)
	}
	m.startBackup(key, version)
	return nil
}

func (m *Machine) currentBackup() (*backup.MegolmBackupKey, id.KeyBackupVersion) {
	m.backup.mu.Lock()
	defer m.backup.mu.Unlock()
	return m.backup.key, m.backup.version
}

func (m *Machine) backupVersion() id.KeyBackupVersion {
	_, v := m.currentBackup()
	return v
}

// startBackup sets the backup to upload to, starts the uploader if it is not running, and
// has it upload what is not in this backup yet.
func (m *Machine) startBackup(key *backup.MegolmBackupKey, version id.KeyBackupVersion) {
	b := &m.backup
	b.mu.Lock()
	defer b.mu.Unlock()
	b.key, b.version = key, version
	if b.closed {
		return
	}
	if b.kick == nil {
		b.kick = make(chan struct{}, 1)
	}
	if b.done == nil {
		ctx, cancel := context.WithCancel(context.Background())
		b.stop, b.done = cancel, make(chan struct{})
		go m.uploadLoop(ctx, b.kick, b.done)
	}
	m.kickBackupLocked()
}

// sessionReceived is mautrix's hook for every room key stored: received, forwarded, imported,
// or our own new one. It runs inside sync processing and must not block.
func (m *Machine) sessionReceived(context.Context, id.RoomID, id.SessionID, uint32) {
	m.backup.mu.Lock()
	defer m.backup.mu.Unlock()
	m.kickBackupLocked()
}

func (m *Machine) kickBackupLocked() {
	if m.backup.kick == nil {
		return
	}
	select {
	case m.backup.kick <- struct{}{}:
	default: // an upload is due already
	}
}

// uploadLoop uploads new room keys a little after they arrive, and retries failed uploads
// with backoff, until ctx ends.
func (m *Machine) uploadLoop(ctx context.Context, kick <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var retry <-chan time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-retry:
		}
		if !backoff.Sleep(ctx, backupDebounce) {
			return
		}
		select { // what arrived while waiting goes up with this upload
		case <-kick:
		default:
		}
		n, err := m.BackupNow(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrBackupReplaced), errors.Is(err, ErrNoBackup):
			m.log.Error("key backup stopped", "err", err)
			retry = nil
		case err != nil:
			failures++
			delay := backoff.Delay(failures, backupRetryMin, backupRetryMax)
			m.log.Warn("key backup upload failed; retrying", "failures", failures, "retry_in", delay, "err", err)
			retry = time.After(delay)
		default:
			failures, retry = 0, nil
			if n > 0 {
				m.log.Debug("room keys backed up", "count", n)
			}
		}
	}
}

// Close stops the key backup uploader and waits for it. Room keys not uploaded yet stay
// marked as such and go up after the next Enable; call BackupNow first to upload them now.
// Close does not close the client or its database.
func (m *Machine) Close() error {
	b := &m.backup
	b.mu.Lock()
	b.closed = true
	stop, done := b.stop, b.done
	b.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

// fromBackup looks up the room key of an event that could not be decrypted in the key
// backup, at most once a minute per key, and reports whether it was found and imported.
func (m *Machine) fromBackup(ctx context.Context, evt *event.Event) bool {
	key, version := m.currentBackup()
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if key == nil || !ok || content.SessionID == "" || !m.mayLookUp(content.SessionID) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, backupLookupTimeout)
	defer cancel()
	log := m.log.With("room", evt.RoomID, "event", evt.ID, "session", content.SessionID)
	resp, err := m.mx.GetKeyBackupForRoomAndSession(ctx, version, evt.RoomID, content.SessionID)
	if errors.Is(err, mautrix.MNotFound) {
		log.Debug("room key is not in the key backup either")
		return false
	}
	if err != nil {
		log.Warn("cannot look up a missing room key in the key backup", "err", err)
		return false
	}
	data, err := resp.SessionData.Decrypt(key)
	if err != nil {
		log.Warn("cannot decrypt a room key from the key backup", "err", err)
		return false
	}
	if _, err := m.mach.ImportRoomKeyFromBackup(ctx, version, evt.RoomID, content.SessionID, data); err != nil {
		log.Warn("cannot import a room key from the key backup", "err", err)
		return false
	}
	log.Info("missing room key found in the key backup")
	return true
}

// mayLookUp reports whether session may be looked up in the backup now, and if so records
// the lookup.
func (m *Machine) mayLookUp(session id.SessionID) bool {
	b := &m.backup
	b.lookupMu.Lock()
	defer b.lookupMu.Unlock()
	now := time.Now()
	if last, ok := b.lookups[session]; ok && now.Sub(last) < backupLookupEvery {
		return false
	}
	if len(b.lookups) >= backupLookupsTracked {
		for s, last := range b.lookups {
			if now.Sub(last) >= backupLookupEvery {
				delete(b.lookups, s)
			}
		}
		if len(b.lookups) >= backupLookupsTracked {
			return false // a flood: wait for it to pass
		}
	}
	if b.lookups == nil {
		b.lookups = map[id.SessionID]time.Time{}
	}
	b.lookups[session] = now
	return true
}
