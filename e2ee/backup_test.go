package e2ee_test

import (
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestBackupUploadsNewKeys: once the account has a key backup, the room keys a device
// receives and the ones it makes go up by themselves, without BackupNow.
func TestBackupUploadsNewKeys(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bob := newSigningParty(t, srv, "alice"), newParty(t, srv, "bob")
	bootstrap(t, alice)
	room := encryptedRoom(t, alice, bob)
	ctx := t.Context()

	send(t, bob, room, matrix.Text("Nytt ärende: 4712"))
	alice.got.wait(t, "Nytt ärende: 4712")
	send(t, alice, room, matrix.Text("Jag tittar på det"))
	bob.got.wait(t, "Jag tittar på det")

	var st e2ee.Status
	var onServer *mautrix.RespRoomKeysVersion[backup.MegolmAuthData]
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st = status(t, alice)
		var err error
		if onServer, err = alice.c.Mautrix().GetKeyBackupLatestVersion(ctx); err != nil {
			t.Fatal(err)
		}
		if st.NotBackedUp == 0 && onServer.Count >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("room keys not backed up after 30 s: %d left, %d on the server", st.NotBackedUp, onServer.Count)
		}
	}
	if onServer.Version != st.BackupVersion {
		t.Errorf("alice uploads to backup %s, the server's latest is %s", st.BackupVersion, onServer.Version)
	}
	if n, err := alice.m.BackupNow(ctx); n != 0 || err != nil {
		t.Errorf("BackupNow after the uploader: %d uploaded, %v", n, err)
	}

	// Bob never set up a backup.
	if _, err := bob.m.BackupNow(ctx); !errors.Is(err, e2ee.ErrNoBackup) {
		t.Errorf("BackupNow without a backup: %v, want ErrNoBackup", err)
	}
}

// TestBackupLooksUpMissingKey: a device that lacks the room key for an event finds it in the
// key backup, but asks the server at most once a minute for the same key.
func TestBackupLooksUpMissingKey(t *testing.T) {
	h := newHistory(t)
	ctx := t.Context()
	second := newDevice(t, h.alice)
	if err := second.m.Recover(ctx, h.recoveryKey); err != nil {
		t.Fatal(err)
	}
	// No Syncer from here on: a key must come from the backup, not be forwarded by alice's
	// other device in answer to mautrix's automatic key request.
	second.stop()
	second.stop = nil

	resp, err := second.c.Mautrix().Messages(ctx, h.room, "", "", mautrix.DirectionBackward,
		&mautrix.FilterPart{Senders: []id.UserID{h.bob.c.UserID()}, Types: []event.Type{event.EventEncrypted}}, 10)
	if err != nil || len(resp.Chunk) == 0 {
		t.Fatalf("bob's messages: %d, %v", len(resp.Chunk), err)
	}
	evt := resp.Chunk[0]
	evt.RoomID = h.room
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		t.Fatal(err)
	}
	session := evt.Content.AsEncrypted().SessionID
	forget := func() {
		t.Helper()
		if _, err := second.db.Exec(ctx, `DELETE FROM crypto_megolm_inbound_session WHERE session_id = $1`, session); err != nil {
			t.Fatal(err)
		}
	}

	forget()
	clear, err := second.m.Decrypt(ctx, evt)
	if err != nil {
		t.Fatalf("decrypt with the room key only in the backup: %v", err)
	}
	if body := clear.Content.AsMessage().Body; body != h.bodies[len(h.bodies)-1] {
		t.Errorf("decrypted %q, want bob's last message %q", body, h.bodies[len(h.bodies)-1])
	}
	if clear.Mautrix.TrustState != id.TrustStateBackup {
		t.Errorf("trust of a key from the backup: %s", clear.Mautrix.TrustState)
	}

	// Lost again within the minute: no second request, the event waits like any other.
	forget()
	if _, err := second.m.Decrypt(ctx, evt); !errors.Is(err, matrix.ErrKeysMissing) {
		t.Errorf("second lookup of the same key within a minute: %v, want ErrKeysMissing", err)
	}
}
