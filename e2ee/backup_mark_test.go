package e2ee_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// afterRoomKeyRead is a database logger that, once armed, runs do right after the next read
// of a room key (mautrix's GetGroupSession), before the reader goes on: a fault injected at
// the moment a decryption has read the key and not yet finished.
type afterRoomKeyRead struct {
	dbutil.DatabaseLogger
	armed atomic.Bool
	mu    sync.Mutex
	do    func(ctx context.Context)
}

func (l *afterRoomKeyRead) QueryTiming(ctx context.Context, method, query string, args []any, nrows int, duration time.Duration, err error) {
	l.DatabaseLogger.QueryTiming(ctx, method, query, args, nrows, duration, err)
	if method != "QueryRow" || err != nil || !strings.Contains(query, "FROM crypto_megolm_inbound_session") ||
		!strings.Contains(query, "AND session_id=") || !l.armed.CompareAndSwap(true, false) {
		return
	}
	l.mu.Lock()
	do := l.do
	l.mu.Unlock()
	do(context.WithoutCancel(ctx))
}

// TestDecryptKeepsBackupMark: a room key that the backup uploader marks as backed up while an
// event in it is being decrypted stays marked. mautrix wrote the whole room key back after
// each decryption (its ratchet tracking), from the copy it had read before the mark, and the
// mark was lost: Status counted the key as not backed up, and nothing told the uploader to look
// again until another key came. TestBackupUploadsNewKeys failed so under load ("1 left, 2 on
// the server": alice's Syncer decrypted her own message while the uploader marked its key).
func TestDecryptKeepsBackupMark(t *testing.T) {
	srv := matrixtest.NewServer(t)
	hook := &afterRoomKeyRead{}
	_, pw := srv.RegisterUser(t, "mark-alice")
	alice := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), "mark-alice.db"), user: "mark-alice", password: pw, got: &inbox{},
		dbLog: func(l dbutil.DatabaseLogger) dbutil.DatabaseLogger { hook.DatabaseLogger = l; return hook }}
	alice.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(alice.close)
	bob := newParty(t, srv, "mark-bob")
	bootstrap(t, alice)
	room := encryptedRoom(t, alice, bob)
	ctx := t.Context()

	send(t, bob, room, matrix.Text("Ärende 1"))
	alice.got.wait(t, "Ärende 1")
	waitFor(t, "alice's room keys to be backed up", func() bool { return status(t, alice).NotBackedUp == 0 })
	alice.stopSyncing()

	// Bob's next message uses the same room key. Alice's store forgets that the key is backed
	// up (as before its first upload), and the uploader marks it again right after the
	// decryption below has read the key.
	evt := heldEvent(t, alice, room, send(t, bob, room, matrix.Text("Ärende 2")))
	if _, err := alice.db.Exec(ctx, `UPDATE crypto_megolm_inbound_session SET key_backup_version = ''`); err != nil {
		t.Fatal(err)
	}
	if n := status(t, alice).NotBackedUp; n != 1 {
		t.Fatalf("%d room keys not backed up after the reset, want 1", n)
	}
	var uploaded int
	var uploadErr error
	hook.mu.Lock()
	hook.do = func(ctx context.Context) { uploaded, uploadErr = alice.m.BackupNow(ctx) }
	hook.mu.Unlock()
	hook.armed.Store(true)
	clear, err := alice.m.Decrypt(ctx, evt)
	if err != nil {
		t.Fatal(err)
	}
	if body := clear.Content.AsMessage().Body; body != "Ärende 2" {
		t.Fatalf("decrypted %q", body)
	}
	if hook.armed.Load() || uploadErr != nil || uploaded != 1 {
		t.Fatalf("the upload during the decryption: fired %v, %d uploaded, %v", !hook.armed.Load(), uploaded, uploadErr)
	}
	if n := status(t, alice).NotBackedUp; n != 0 {
		t.Errorf("%d room keys not backed up after the decryption, want 0 (the decryption overwrote the uploader's mark)", n)
	}
}
