package e2ee_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"

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

	// An event of bob's that alice has not decrypted, in a room key she holds and whose
	// earlier events she has decrypted: bob's next message, once he sends it with a key alice
	// already has (he may start a new one, for instance after alice's device list changed).
	var evt *event.Event
	var want string
	for i := 1; ; i++ {
		body := fmt.Sprintf("Ärende %d", i)
		send(t, bob, room, matrix.Text(body))
		alice.got.wait(t, body)
		alice.stopSyncing()
		nextBody := body + " nästa"
		next := heldEvent(t, alice, room, send(t, bob, room, matrix.Text(nextBody)))
		must(t, next.Content.ParseRaw(next.Type))
		var n int
		must(t, alice.db.QueryRow(ctx, `SELECT count(*) FROM crypto_megolm_inbound_session WHERE session_id = $1`,
			next.Content.AsEncrypted().SessionID).Scan(&n))
		if n == 1 {
			evt, want = next, nextBody
			break
		}
		if i == 5 {
			t.Fatal("bob started a new room key for each of 5 messages")
		}
		runSyncer(alice)
		alice.got.wait(t, nextBody)
	}
	// The uploader is stopped; alice's store forgets that her keys are backed up (as before
	// their first upload), and they are uploaded and marked right after the decryption below
	// has read the key, as the uploader would.
	must(t, alice.m.Close())
	if _, err := alice.db.Exec(ctx, `UPDATE crypto_megolm_inbound_session SET key_backup_version = ''`); err != nil {
		t.Fatal(err)
	}
	if n := status(t, alice).NotBackedUp; n == 0 {
		t.Fatal("no room keys not backed up after the reset")
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
	if body := clear.Content.AsMessage().Body; body != want {
		t.Fatalf("decrypted %q, want %q", body, want)
	}
	if hook.armed.Load() || uploadErr != nil || uploaded == 0 {
		t.Fatalf("the upload during the decryption: fired %v, %d uploaded, %v", !hook.armed.Load(), uploaded, uploadErr)
	}
	if n := status(t, alice).NotBackedUp; n != 0 {
		t.Errorf("%d room keys not backed up after the decryption, want 0 (the decryption overwrote the uploader's mark)", n)
	}
}
