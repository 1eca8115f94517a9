package matrix_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// outageLength keeps the homeserver down past the 30 s after which the client asks again
// whether a room is encrypted: from there on the old Send refused even rooms it had just used.
const outageLength = 35 * time.Second

// TestOutageSendStoresFirst: with the homeserver stopped, 100 sends into each of a room used
// just before, a room this process never saw (as good as idle: nothing is remembered about it)
// and a room never used, plus 10 oversized ones, all return stored; the process is closed and
// started again during the outage; afterwards every item arrives exactly once, in order.
func TestOutageSendStoresFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: stops the homeserver for 35 s")
	}
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	bob := srv.Client(t, "bob")
	dbPath := filepath.Join(t.TempDir(), "alice.db")
	open := func() *matrix.Client {
		t.Helper()
		db, err := matrix.OpenDatabase(t.Context(), dbPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		c, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: db,
			Logger: quietLogger(t), Outbox: matrix.OutboxOptions{MaxRetryDelay: 2 * time.Second, ResumeDelay: 500 * time.Millisecond}})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := open()
	used, idle, never := sharedRoom(t, first, bob), sharedRoom(t, first, bob), sharedRoom(t, first, bob)
	if _, err := sendAndWait(t.Context(), func() (*matrix.Pending, error) {
		return first.Send(t.Context(), used, matrix.Text("before"), matrix.SendOptions{})
	}); err != nil {
		t.Fatal(err)
	}
	first.Close()
	c := open() // used is the room this client just sent to; idle and never it knows nothing of
	if _, err := sendAndWait(t.Context(), func() (*matrix.Pending, error) {
		return c.Send(t.Context(), used, matrix.Text("just before"), matrix.SendOptions{})
	}); err != nil {
		t.Fatal(err)
	}

	want := map[id.RoomID][]string{used: {"before", "just before"}}
	var slowest time.Duration
	var stored int
	send := func(c *matrix.Client, room id.RoomID, body string, msg matrix.Message) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := c.Send(ctx, room, msg, matrix.SendOptions{IdempotencyKey: string(room) + "/" + body}); err != nil {
			t.Fatalf("Send %q during the outage: %v", body, err)
		}
		slowest = max(slowest, time.Since(start))
		stored++
		want[room] = append(want[room], body)
		if strings.HasPrefix(body, "big") {
			want[room] = append(want[room], body+"/file")
		}
	}
	batch := func(c *matrix.Client, from, to int) {
		for i := from; i < to; i++ {
			for _, r := range []id.RoomID{used, idle, never} {
				send(c, r, fmt.Sprintf("item %03d", i), matrix.Text(fmt.Sprintf("item %03d", i)))
			}
			if i%10 == 0 {
				big := fmt.Sprintf("big %03d", i)
				send(c, never, big, matrix.Text(big+" "+strings.Repeat("ärende 4711 ", 8000)))
			}
		}
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	batch(c, 0, 50)
	c.Close()
	c = open() // a restart during the outage: New succeeds with the stored session
	batch(c, 50, 100)
	t.Logf("%d sends stored during the outage; slowest %v", stored, slowest)
	time.Sleep(time.Until(down.Add(outageLength)))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}

	for _, r := range []id.RoomID{used, idle, never} {
		got := waitBodies(t, bob, r, first.UserID(), len(want[r]))
		assertExactlyOnceInOrder(t, r, normaliseOverflow(got), want[r])
	}
}

// normaliseOverflow names the parts of an oversized message "big NNN" (shortened) and
// "big NNN/file" (its full text), whatever the shortened text says.
func normaliseOverflow(bodies []string) []string {
	out := slices.Clone(bodies)
	for i, b := range out {
		if strings.HasPrefix(b, "big ") {
			out[i] = b[:len("big 000")]
		} else if b == "message.txt" && i > 0 {
			out[i] = out[i-1] + "/file"
		}
	}
	return out
}

// waitBodies waits until sender's messages in room number at least n (or two minutes have
// passed), and returns them.
func waitBodies(t *testing.T, reader *mautrix.Client, room id.RoomID, sender id.UserID, n int) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := roomBodies(t, reader, room, sender)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFailureStaysTyped: a send the homeserver refuses (into a room the sender is not in)
// fails with an error matching ErrForbidden and an *HTTPError, whether waited on at once,
// later, or after a restart. Before, only the first kept the type; the others got text.
func TestFailureStaysTyped(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	carol := srv.Client(t, "carol")
	resp, err := carol.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	closed := resp.RoomID // carol's room: alice is not in it
	dbPath := filepath.Join(t.TempDir(), "alice.db")
	open := func(outcomes chan<- matrix.Outcome) *matrix.Client {
		t.Helper()
		db, err := matrix.OpenDatabase(t.Context(), dbPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: db,
			Outbox: matrix.OutboxOptions{OnOutcome: func(o matrix.Outcome) {
				if outcomes != nil {
					outcomes <- o
				}
			}}})
	}
	outcomes := make(chan matrix.Outcome, 10)
	c := open(outcomes)
	for _, tc := range []struct {
		name string
		wait func(t *testing.T, key string) error
	}{
		{"at once", func(t *testing.T, key string) error {
			p, err := c.Send(t.Context(), closed, matrix.Text("x"), matrix.SendOptions{IdempotencyKey: key})
			if err != nil {
				return err
			}
			return waitErr(t, p)
		}},
		{"5 s later", func(t *testing.T, key string) error {
			p, err := c.Send(t.Context(), closed, matrix.Text("x"), matrix.SendOptions{IdempotencyKey: key})
			if err != nil {
				return err
			}
			<-outcomes // failed and recorded
			time.Sleep(5 * time.Second)
			return waitErr(t, p)
		}},
		{"after restart", func(t *testing.T, key string) error {
			p, err := c.Send(t.Context(), closed, matrix.Text("x"), matrix.SendOptions{IdempotencyKey: key})
			if err != nil {
				return err
			}
			_ = waitErr(t, p)
			c.Close()
			again := open(nil)
			p, err = again.Send(t.Context(), closed, matrix.Text("x"), matrix.SendOptions{IdempotencyKey: key})
			if err != nil {
				return err
			}
			if !p.Duplicate {
				t.Error("the repeated key was not recognised after the restart")
			}
			return waitErr(t, p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for len(outcomes) > 0 {
				<-outcomes
			}
			err := tc.wait(t, tc.name)
			var se *matrix.SendError
			var he *matrix.HTTPError
			if !errors.Is(err, matrix.ErrForbidden) || !errors.As(err, &se) || !errors.As(err, &he) || he.Status != 403 || he.ErrCode != "M_FORBIDDEN" {
				t.Fatalf("got %v (%T), want a *SendError with a 403 M_FORBIDDEN *HTTPError", err, errors.Unwrap(err))
			}
		})
	}
}

func waitErr(t *testing.T, p *matrix.Pending) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := p.Wait(ctx)
	return err
}

// TestRevokedTokenKeepsItemsPending: the device's token is revoked, then the homeserver goes
// down. A restart during the outage starts offline; the items sent then wait, and the client
// reports ErrUnknownToken once the server is back. After a new login as the same user they go
// out, once each, in order. Before, the 401 failed them for good, and their keys then returned
// the failed items.
func TestRevokedTokenKeepsItemsPending(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	bob := srv.Client(t, "bob")
	dbPath := filepath.Join(t.TempDir(), "alice.db")
	errs := make(chan error, 10)
	open := func() *matrix.Client {
		t.Helper()
		db, err := matrix.OpenDatabase(t.Context(), dbPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: db,
			OnError: func(err error) { errs <- err },
			Outbox:  matrix.OutboxOptions{MinRetryDelay: 50 * time.Millisecond, MaxRetryDelay: 500 * time.Millisecond}})
	}
	c := open()
	room := sharedRoom(t, c, bob)
	// Revoke the device's token behind the client's back, as an administrator would.
	sess := c.Session()
	other, err := mautrix.NewClient(srv.URL, sess.UserID, sess.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	c = open() // offline: the token cannot be checked yet
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("wait %d", i))
		if _, err := c.Send(t.Context(), room, matrix.Text(want[i]), matrix.SendOptions{IdempotencyKey: want[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, matrix.ErrUnknownToken) {
			t.Fatalf("OnError: %v, want ErrUnknownToken", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the revoked token was never reported")
	}
	if !errors.Is(c.Err(), matrix.ErrUnknownToken) {
		t.Fatalf("Err() = %v", c.Err())
	}
	// Still pending: Wait says why it cannot finish, without a failure.
	p, err := c.Send(t.Context(), room, matrix.Text(want[0]), matrix.SendOptions{IdempotencyKey: want[0]})
	if err != nil {
		t.Fatal(err)
	}
	var se *matrix.SendError
	if err := waitErr(t, p); !errors.Is(err, matrix.ErrUnknownToken) || errors.As(err, &se) {
		t.Fatalf("item of the revoked session: %v, want ErrUnknownToken and no *SendError", err)
	}
	c.Close()

	c = open() // the stored token is refused: a new login, as alice
	if c.Session().DeviceID == sess.DeviceID {
		t.Fatal("no new login")
	}
	for _, w := range want {
		p, err := c.Send(t.Context(), room, matrix.Text(w), matrix.SendOptions{IdempotencyKey: w})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Duplicate {
			t.Errorf("%q: the key was not recognised", w)
		}
		if err := waitErr(t, p); err != nil {
			t.Fatalf("%q after the new login: %v", w, err)
		}
	}
	assertExactlyOnceInOrder(t, room, waitBodies(t, bob, room, c.UserID(), len(want)), want)
}

// TestIdempotencyKeyBoundToRoomAndContent: a key comes back with another room, or with other
// content: ErrIdempotencyConflict, and nothing is sent. Before, the first send's result was
// returned as if it were the second's.
func TestIdempotencyKeyBoundToRoomAndContent(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	roomA, roomB := sharedRoom(t, alice, bob), sharedRoom(t, alice, bob)
	ctx := t.Context()
	if _, err := sendAndWait(ctx, func() (*matrix.Pending, error) {
		return alice.Send(ctx, roomA, matrix.Text("update 3"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
	}); err != nil {
		t.Fatal(err)
	}
	for name, send := range map[string]func() (*matrix.Pending, error){
		"other room": func() (*matrix.Pending, error) {
			return alice.Send(ctx, roomB, matrix.Text("update 3"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
		},
		"other content": func() (*matrix.Pending, error) {
			return alice.Send(ctx, roomA, matrix.Text("update 3, corrected"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
		},
		"a file": func() (*matrix.Pending, error) {
			return alice.SendFile(ctx, roomA, matrix.Attachment{Name: "a.txt", Data: []byte("x")}, matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
		},
	} {
		if p, err := send(); !errors.Is(err, matrix.ErrIdempotencyConflict) {
			t.Errorf("%s: %+v, %v; want ErrIdempotencyConflict", name, p, err)
		}
	}
	p, err := alice.Send(ctx, roomA, matrix.Text("update 3"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
	if err != nil || !p.Duplicate {
		t.Fatalf("the same send again: %+v, %v; want a duplicate", p, err)
	}
	if _, err := sendAndWait(ctx, func() (*matrix.Pending, error) {
		return alice.Send(ctx, roomB, matrix.Text("end"), matrix.SendOptions{})
	}); err != nil {
		t.Fatal(err)
	}
	assertPosted(t, bob, roomA, alice.UserID(), []string{"update 3"})
	assertPosted(t, bob, roomB, alice.UserID(), []string{"end"})
}
