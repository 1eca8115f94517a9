package matrix_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// sharedRoom has sender create a room that reader joins.
func sharedRoom(t testing.TB, sender *matrix.Client, reader *mautrix.Client) id.RoomID {
	t.Helper()
	resp, err := sender.Mautrix().CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{reader.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.JoinRoomByID(t.Context(), resp.RoomID); err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}

// roomBodies returns the bodies of sender's messages in room, oldest first.
func roomBodies(t testing.TB, reader *mautrix.Client, room id.RoomID, sender id.UserID) []string {
	t.Helper()
	var bodies []string
	from := ""
	filter := &mautrix.FilterPart{Senders: []id.UserID{sender}, Types: []event.Type{event.EventMessage}}
	for {
		resp, err := reader.Messages(t.Context(), room, from, "", mautrix.DirectionBackward, filter, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, evt := range resp.Chunk {
			_ = evt.Content.ParseRaw(evt.Type)
			if msg := evt.Content.AsMessage(); msg != nil {
				bodies = append(bodies, msg.Body)
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" {
			break
		}
		from = resp.End
	}
	for i, j := 0, len(bodies)-1; i < j; i, j = i+1, j-1 {
		bodies[i], bodies[j] = bodies[j], bodies[i]
	}
	return bodies
}

// assertExactlyOnceInOrder checks that got is want: every item once, in order.
// assertPosted checks that sender's messages in room are want, each once, in order, once
// the server's history (which lags behind the sends it acknowledged) has at least as many.
func assertPosted(t *testing.T, reader *mautrix.Client, room id.RoomID, sender id.UserID, want []string) {
	t.Helper()
	assertExactlyOnceInOrder(t, room, waitBodies(t, reader, room, sender, len(want)), want)
}

func assertExactlyOnceInOrder(t testing.TB, room id.RoomID, got, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, b := range got {
		seen[b]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("%s: %q arrived %d times, want once", room, w, seen[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d messages, want %d", room, len(got), len(want))
		return
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: message %d is %q, want %q (order broken)", room, i, got[i], want[i])
			return
		}
	}
}

func TestSendAndWait(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)

	p, err := alice.Send(t.Context(), room, matrix.Notice("Case 4711: decision made"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evtID, err := p.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := matrixtest.WaitMessage(t, bob, room, "Case 4711: decision made")
	if got.ID != evtID {
		t.Errorf("bob got %s, Wait said %s", got.ID, evtID)
	}
	if got.Content.AsMessage().MsgType != event.MsgNotice {
		t.Errorf("msgtype %s", got.Content.AsMessage().MsgType)
	}
}

func TestIdempotencyKey(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)
	ctx := t.Context()

	var wg sync.WaitGroup
	pendings := make([]*matrix.Pending, 8)
	for i := range pendings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := alice.Send(ctx, room, matrix.Text("update 3 of case 4711"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
			if err != nil {
				t.Error(err)
				return
			}
			pendings[i] = p
		}()
	}
	wg.Wait()
	dups := 0
	for _, p := range pendings {
		if p.ID != pendings[0].ID {
			t.Fatalf("same key gave items %d and %d", p.ID, pendings[0].ID)
		}
		if p.Duplicate {
			dups++
		}
	}
	if dups != len(pendings)-1 {
		t.Errorf("%d duplicates reported, want %d", dups, len(pendings)-1)
	}
	first, err := pendings[0].Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Sent already: a repeat returns the first result at once.
	p, err := alice.Send(ctx, room, matrix.Text("update 3 of case 4711"), matrix.SendOptions{IdempotencyKey: "case-4711/update-3"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := p.Wait(ctx); err != nil || again != first {
		t.Fatalf("repeat after sending: %s, %v; want %s", again, err, first)
	}
	if _, err := alice.Send(ctx, room, matrix.Text("end"), matrix.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, bob, room, "end")
	assertPosted(t, bob, room, alice.UserID(), []string{"update 3 of case 4711", "end"})
}

func TestSendOrderAcrossRooms(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	const rooms, perRoom = 5, 20
	var ids []id.RoomID
	for range rooms {
		ids = append(ids, sharedRoom(t, alice, bob))
	}
	var last []*matrix.Pending
	for i := range perRoom {
		for _, r := range ids {
			p, err := alice.Send(t.Context(), r, matrix.Text(fmt.Sprintf("msg %02d", i)), matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if i == perRoom-1 {
				last = append(last, p)
			}
		}
	}
	for _, p := range last {
		if _, err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range perRoom {
		want = append(want, fmt.Sprintf("msg %02d", i))
	}
	for _, r := range ids {
		assertPosted(t, bob, r, alice.UserID(), want)
	}
}

func TestSendBadInput(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)
	ctx := t.Context()

	for _, bad := range []id.RoomID{"", "#alias:localhost", "room", "!", "!a b:localhost", "!\x00:x", id.RoomID("!" + strings.Repeat("a", 300))} {
		if _, err := alice.Send(ctx, bad, matrix.Text("x"), matrix.SendOptions{}); !errors.Is(err, matrix.ErrInvalidRoom) {
			t.Errorf("room %q: %v, want ErrInvalidRoom", bad, err)
		}
	}
	for name, msg := range map[string]matrix.Message{
		"empty body":   matrix.Text(""),
		"invalid utf8": matrix.Text("\xff\xfe"),
		"nil content":  {Type: event.EventMessage},
		"unknown type": {Type: event.Type{Type: "com.example.custom", Class: event.MessageEventType}, Content: map[string]any{"a": 1}},
	} {
		if _, err := alice.Send(ctx, room, msg, matrix.SendOptions{}); !errors.Is(err, matrix.ErrInvalidContent) {
			t.Errorf("%s: %v, want ErrInvalidContent", name, err)
		}
	}
	if _, err := alice.Send(ctx, room, matrix.Text("x"), matrix.SendOptions{IdempotencyKey: "\xff"}); !errors.Is(err, matrix.ErrInvalidContent) {
		t.Errorf("invalid key: %v", err)
	}

	// A well-formed room we are not in: stored, tried once, failed for good with the reason.
	p, err := alice.Send(ctx, "!unknown:localhost", matrix.Text("into the void"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Wait(ctx)
	var se *matrix.SendError
	var he *matrix.HTTPError
	if !errors.As(err, &se) || !errors.As(err, &he) || he.Status/100 != 4 {
		t.Fatalf("send to unknown room: %v, want *SendError with a 4xx *HTTPError", err)
	}

	// A cancelled context stores nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := alice.Send(cctx, room, matrix.Text("never"), matrix.SendOptions{}); err == nil {
		t.Error("send with a cancelled context succeeded")
	}
	// A closed client refuses.
	alice.Close()
	if _, err := alice.Send(ctx, room, matrix.Text("after close"), matrix.SendOptions{}); !errors.Is(err, matrix.ErrClosed) {
		t.Errorf("send after Close: %v, want ErrClosed", err)
	}
	for _, b := range roomBodies(t, bob, room, alice.UserID()) {
		if b == "never" || b == "after close" {
			t.Errorf("%q was sent", b)
		}
	}
}

func TestOversizedMessageIsShortenedAndAttached(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)
	full := strings.Repeat("Beslut i ärende 4711. ", 10000) // ~230 KB
	p, err := alice.Send(t.Context(), room, matrix.Text(full), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(t.Context()); err != nil {
		t.Fatalf("oversized message was not sent: %v", err)
	}
	file := matrixtest.WaitEvent(t, bob, room, func(e *event.Event) bool {
		m := e.Content.AsMessage()
		return e.Type == event.EventMessage && m != nil && m.MsgType == event.MsgFile
	})
	uri, err := file.Content.AsMessage().URL.Parse()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := bob.Download(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Body.Close()
	got, _ := io.ReadAll(rc.Body)
	if string(got) != full {
		t.Errorf("attachment has %d bytes, want the full %d", len(got), len(full))
	}
	bodies := roomBodies(t, bob, room, alice.UserID())
	if len(bodies) != 2 || !strings.HasPrefix(full, bodies[0][:100]) || len(bodies[0]) >= len(full) {
		t.Errorf("want the shortened text then the file, got %d messages", len(bodies))
	}
}

// TestRateLimitedSends: every third send is refused with 429 M_LIMIT_EXCEEDED by a fault
// injector in front of the real server (Dendrite does not rate-limit /send); every item
// arrives once, in order, and none fails.
func TestRateLimitedSends(t *testing.T) {
	srv := matrixtest.NewServer(t, matrixtest.WithRateLimit(5, 200*time.Millisecond))
	_, pw := srv.RegisterUser(t, "alice")
	proxy := newFaultProxy(t, srv.URL)
	proxy.limitEach = 3
	var failed atomic.Int64
	alice := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("alice", pw), DB: testDB(t),
		Outbox: matrix.OutboxOptions{OnOutcome: func(o matrix.Outcome) {
			if o.Err != nil {
				failed.Add(1)
			}
		}}})
	bob := srv.Client(t, "bob")
	bob.DefaultHTTPRetries, bob.DefaultHTTPBackoff = 10, 100*time.Millisecond // bob is limited too
	// Creating rooms and inviting are limited by Dendrite itself here; the client waits.
	var rooms []id.RoomID
	for range 4 {
		rooms = append(rooms, sharedRoom(t, alice, bob))
	}
	var want []string
	var pend []*matrix.Pending
	for i := range 15 {
		want = append(want, fmt.Sprintf("n%d", i))
		for _, r := range rooms {
			p, err := alice.Send(t.Context(), r, matrix.Text(want[i]), matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pend = append(pend, p)
		}
	}
	for _, p := range pend {
		if _, err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	alice.Close() // waits for the lanes
	if failed.Load() != 0 {
		t.Errorf("%d items failed", failed.Load())
	}
	if proxy.limited.Load() == 0 {
		t.Fatal("the fault injector never limited a send")
	}
	for _, r := range rooms {
		assertPosted(t, bob, r, alice.UserID(), want)
	}
}

// TestOutage stops the homeserver for 20 s while items are being sent; all arrive afterwards,
// once each, in order.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: stops the homeserver for 20 s")
	}
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	alice := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: testDB(t),
		Outbox: matrix.OutboxOptions{MaxRetryDelay: 2 * time.Second}})
	bob := srv.Client(t, "bob")
	rooms := []id.RoomID{sharedRoom(t, alice, bob), sharedRoom(t, alice, bob)}

	var want []string
	var pend []*matrix.Pending
	send := func(i int) {
		want = append(want, fmt.Sprintf("item %03d", i))
		for _, r := range rooms {
			p, err := alice.Send(t.Context(), r, matrix.Text(want[i]), matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pend = append(pend, p)
		}
	}
	for i := range 30 {
		send(i)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 60; i++ { // stored while the server is down
		send(i)
		time.Sleep(20 * time.Second / 30)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		if _, err := p.Wait(t.Context()); err != nil {
			t.Fatalf("item %d: %v", p.ID, err)
		}
	}
	for _, r := range rooms {
		assertPosted(t, bob, r, alice.UserID(), want)
	}
}
