package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestResumedSendWaitsForEncryption: an item stored for an encrypted room resumes after a
// restart before encryption is plugged in again; it waits, and never goes out as plaintext.
func TestResumedSendWaitsForEncryption(t *testing.T) {
	srv := newTestServer(t)
	alice := newTestAccount(t, srv, "alice")
	outbox := OutboxOptions{ResumeDelay: 10 * time.Millisecond, MinRetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}
	c := alice.open(outbox)
	resp, err := c.mx.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Stored by a run that had encryption.
	content, _ := json.Marshal(Text("case 4711: confidential").Content)
	if _, err := c.db.Exec(t.Context(), `INSERT INTO samtal_outbox (session, room_id, event_type, content, encrypting, created_at) VALUES ($1, $2, $3, $4, 1, $5)`,
		c.name, resp.RoomID, event.EventMessage.Type, string(content), time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}

	again := alice.open(outbox)        // no encryption plugged in
	time.Sleep(500 * time.Millisecond) // many retry rounds at these delays
	msgs, err := again.mx.Messages(t.Context(), resp.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range msgs.Chunk {
		if evt.Type == event.EventMessage {
			t.Fatalf("plaintext in an encrypted room: %s", evt.Content.VeryRaw)
		}
	}
	var state int
	if err := again.db.QueryRow(t.Context(), `SELECT state FROM samtal_outbox WHERE room_id = $1`, resp.RoomID).Scan(&state); err != nil || state != statePending {
		t.Fatalf("the item is in state %d (%v), want still pending", state, err)
	}
}

// TestSyncerNoticesEncryption: a room that turns encrypted after the client last asked is
// treated as encrypted as soon as the Syncer sees the change, not 30 s later.
func TestSyncerNoticesEncryption(t *testing.T) {
	srv := newTestServer(t)
	c := newTestAccount(t, srv, "alice").open(OutboxOptions{})
	resp, err := c.mx.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if enc, err := c.RoomEncrypted(t.Context(), resp.RoomID); err != nil || enc {
		t.Fatalf("new room: encrypted %v, %v", enc, err)
	}
	if _, err := c.mx.SendStateEvent(t.Context(), resp.RoomID, event.StateEncryption, "", &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}); err != nil {
		t.Fatal(err)
	}
	s := c.NewSyncer(SyncOptions{Timeout: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go s.Run(ctx)
	for deadline := time.Now().Add(time.Minute); s.Stats().Batches == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the syncer never completed a batch")
		}
	}
	if _, err := c.Send(t.Context(), resp.RoomID, Text("plaintext?"), SendOptions{}); !errors.Is(err, ErrEncryptionRequired) {
		t.Fatalf("send after the room turned encrypted: %v, want ErrEncryptionRequired", err)
	}
}

// TestPlaintextUploadNotSentIntoEncryptedRoom: a file message stored while the room was not
// encrypted (its upload is plaintext) fails for good once the room is encrypted, rather than
// be referenced from an encrypted event.
func TestPlaintextUploadNotSentIntoEncryptedRoom(t *testing.T) {
	content, _ := json.Marshal(File(FileKind, "mxc://localhost/plain", "a.pdf", "application/pdf", 3).Content)
	if !plaintextMedia(content) {
		t.Fatal("a file message with a url is not seen as a plaintext upload")
	}
	enc, _ := json.Marshal(EncryptedFile(FileKind, &event.EncryptedFileInfo{URL: "mxc://localhost/enc"}, "a.pdf", "application/pdf", 3).Content)
	text, _ := json.Marshal(Text("see https://example.com").Content)
	if plaintextMedia(enc) || plaintextMedia(text) {
		t.Fatal("an encrypted file or a text message was taken for a plaintext upload")
	}
	if retryable(fmt.Errorf("%w: x", ErrInvalidContent)) {
		t.Fatal("invalid content would be retried forever")
	}
}

// failingEncryption injects a fault: encryption that always fails with an error the outbox
// does not know.
type failingEncryption struct{ Encryption }

func (failingEncryption) Encrypt(context.Context, id.RoomID, event.Type, any) (*event.EncryptedEventContent, error) {
	return nil, errors.New("crypto store is broken")
}

// TestLocalErrorsAreBounded: an error the outbox does not recognise fails the item after a
// bounded number of attempts, which are written to the database. Before, it was retried
// forever and attempts stayed 0.
func TestLocalErrorsAreBounded(t *testing.T) {
	srv := newTestServer(t)
	c := newTestAccount(t, srv, "alice").open(OutboxOptions{MinRetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond, ResumeDelay: 10 * time.Millisecond})
	resp, err := c.mx.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.UseEncryption(failingEncryption{})
	p, err := c.Send(t.Context(), resp.RoomID, Text("case 4711"), SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var se *SendError
	if _, err := p.Wait(ctx); !errors.As(err, &se) {
		t.Fatalf("Wait: %v, want a *SendError after %d attempts", err, maxLocalAttempts)
	}
	var state, attempts int
	if err := c.db.QueryRow(t.Context(), `SELECT state, attempts FROM samtal_outbox WHERE id = $1`, p.ID).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != stateFailed || attempts != maxLocalAttempts {
		t.Fatalf("state %d after %d attempts, want failed after %d", state, attempts, maxLocalAttempts)
	}
}

// TestClassify: what the outbox retries, holds, or gives up on.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want failKind
	}{
		{&HTTPError{Status: 403, ErrCode: "M_FORBIDDEN"}, failRefused},
		{&HTTPError{Status: 429, ErrCode: "M_LIMIT_EXCEEDED"}, failTemporary},
		{&HTTPError{Status: 502}, failTemporary},
		{&HTTPError{Status: 401, ErrCode: "M_UNKNOWN_TOKEN"}, failToken},
		{&unreachableError{errors.New("connection refused")}, failUnreachable},
		{fmt.Errorf("x: %w", ErrEncryptionRequired), failNoEncryption},
		{fmt.Errorf("x: %w", ErrInvalidContent), failInvalid},
		{fmt.Errorf("x: %w", ErrTooLarge), failInvalid},
		{errors.New("something local"), failLocal},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestMarksGathered: the marks of items sent one after another, as a lane sends them, are
// written in a few commits, not one each.
func TestMarksGathered(t *testing.T) {
	srv := newTestServer(t)
	c := newTestAccount(t, srv, "alice").open(OutboxOptions{})
	o := c.outbox
	commits, written := o.markCommits.Load(), o.marksWritten.Load()
	const n = 10
	for i := range n {
		o.marks <- mark{id: int64(1_000_000 + i)} // no such items: the updates change nothing
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for o.marksWritten.Load()-written < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d marks written", o.marksWritten.Load()-written, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := o.markCommits.Load() - commits; got > 3 {
		t.Errorf("%d marks sent 2 ms apart took %d commits, want at most 3", n, got)
	}
}

// TestSendNotHeldByMarks: an item sent after the lane ran dry goes out at once, not after
// the mark of the item before it is written. The lane waits for its marks before it gives up
// the room's lease, and it took the next item only after that wait: with the marks gathered
// (commitMarks), each mail of a steady trickle waited about 50 ms more for its event.
func TestSendNotHeldByMarks(t *testing.T) {
	markGather = 20 * time.Second
	t.Cleanup(func() { markGather = 100 * time.Millisecond })
	srv := newTestServer(t)
	c := newTestAccount(t, srv, "alice").open(OutboxOptions{})
	ctx := t.Context()
	resp, err := c.mx.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Send(ctx, resp.RoomID, Text("first"), SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// The first item's mark now waits for the gather; the lane, with nothing left, waits
	// for that mark before it releases the room.
	time.Sleep(50 * time.Millisecond)
	second, err := c.Send(ctx, resp.RoomID, Text("second"), SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // well below the 20 s gather
	defer cancel()
	if _, err := second.Wait(wctx); err != nil {
		t.Fatalf("the second send waited for the first one's mark: %v", err)
	}
}
