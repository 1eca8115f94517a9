package matrix_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/storage/storagetest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRetentionDropsEncryptedContent: once an item is delivered into an encrypted room, its
// plaintext is gone from the database file; the item of an unencrypted room keeps its content
// for the retention period. Before, every delivered row kept its content for good. The file and
// its write-ahead log are read while the client runs (the outbox's sweep empties the log), and
// again after it closed.
func TestRetentionDropsEncryptedContent(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	bob := srv.Client(t, "bob")
	dbPath := filepath.Join(t.TempDir(), "alice.db")
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: db, Logger: quietLogger(t),
		Outbox: matrix.OutboxOptions{LeaseDuration: 300 * time.Millisecond}}) // a sweep every 300 ms
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	resp, err := c.Mautrix().CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	plain := sharedRoom(t, c, bob)

	const secret, public = "SECRET-MARKER-4711-personnummer", "PUBLIC-MARKER-4711"
	for room, body := range map[id.RoomID]string{resp.RoomID: secret, plain: public} {
		if _, err := sendAndWait(ctx, func() (*matrix.Pending, error) {
			return c.Send(ctx, room, matrix.Text(body), matrix.SendOptions{IdempotencyKey: string(room)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The key still names the send after its content is gone.
	if p, err := c.Send(ctx, resp.RoomID, matrix.Text(secret), matrix.SendOptions{IdempotencyKey: string(resp.RoomID)}); err != nil || !p.Duplicate {
		t.Fatalf("repeat after delivery: %+v, %v", p, err)
	}
	onDisk := func() []byte { return storagetest.OnDisk(t, dbPath) }
	matrixtest.Eventually(t, func() error {
		if bytes.Contains(onDisk(), []byte(secret)) {
			return errors.New("the plaintext of a message delivered into an encrypted room is still in the database file or its log")
		}
		return nil
	})
	m.Close()
	c.Close()
	db.Close()

	file := onDisk()
	if bytes.Contains(file, []byte(secret)) {
		t.Error("the plaintext of a message delivered into an encrypted room is in the database file after close")
	}
	if !bytes.Contains(file, []byte(public)) {
		t.Error("the content of an unencrypted room's item is gone before its retention (or the grep sees nothing)")
	}
}
