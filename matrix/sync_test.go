package matrix_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
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

// TestSyncHandlers: each kind of event reaches its handler, in the order it happened, with
// its content parsed; the bot's own events are not delivered.
func TestSyncHandlers(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	carol := srv.Client(t, "carol")
	ctx := t.Context()

	var got, own syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	s.OnInvite(func(ctx context.Context, e *matrix.Event) error {
		got.add("invite from " + string(e.Sender) + " to " + e.GetStateKey())
		return nil
	})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		got.add(fmt.Sprintf("message %s in %s", e.Content.AsMessage().Body, e.RoomID))
		return nil
	})
	s.OnMembership(func(ctx context.Context, e *matrix.Event) error {
		got.add(fmt.Sprintf("member %s %s by %s", e.GetStateKey(), e.Content.AsMember().Membership, e.Sender))
		return nil
	})
	s.OnReaction(func(ctx context.Context, e *matrix.Event) error {
		rel := e.Content.AsReaction().RelatesTo
		got.add(fmt.Sprintf("reaction %s to %s", rel.Key, rel.EventID))
		return nil
	})
	s.OnEvent(event.Type{}, func(ctx context.Context, e *matrix.Event) error {
		if e.Sender == bot.UserID() {
			own.add(e.Type.Type)
		}
		return nil
	})
	startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })

	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	got.waitFor(t, "invite from "+string(alice.UserID)+" to "+string(bot.UserID()))
	if _, err := bot.Mautrix().JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, room, "one")
	if err != nil {
		t.Fatal(err)
	}
	one := sent.EventID
	mustSend(t, alice, room, "two")
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendReaction(ctx, room, one, "👍"); err != nil {
		t.Fatal(err)
	}
	p, err := bot.Send(ctx, room, matrix.Text("from the bot"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mustSend(t, alice, room, "three")

	want := []string{
		"invite from " + string(alice.UserID) + " to " + string(bot.UserID()),
		"message one in " + string(room),
		"message two in " + string(room),
		fmt.Sprintf("member %s invite by %s", carol.UserID, alice.UserID),
		fmt.Sprintf("member %s join by %s", carol.UserID, carol.UserID),
		"reaction 👍 to " + string(one),
		"message three in " + string(room),
	}
	if g := got.waitFor(t, want[len(want)-1]); !slices.Equal(g, want) {
		t.Errorf("handlers saw\n  %s\nwant\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
	if o := own.snapshot(); len(o) > 0 {
		t.Errorf("the bot's own events were delivered: %v", o)
	}
	if st := s.Stats(); st.HandlerErrors != 0 {
		t.Errorf("%d handler errors", st.HandlerErrors)
	}
}

// TestSyncReplayHistory: a first sync skips the messages already in a room unless the history
// is replayed; messages sent after it are delivered either way.
func TestSyncReplayHistory(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "bot")
	alice := srv.Client(t, "alice")
	for _, tc := range []struct {
		name   string
		replay bool
		want   []string
	}{
		{"skip history", false, []string{"new"}},
		{"replay history", true, []string{"old 1", "old 2", "new"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bot := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("bot", password), DB: testDB(t)})
			room := syncRoom(t, alice, bot)
			mustSend(t, alice, room, "old 1")
			mustSend(t, alice, room, "old 2")
			// The send returns before the server's sync stream has the event; history is
			// what the stream had when the bot first synced.
			matrixtest.WaitMessage(t, alice, room, "old 2")

			var got syncRecorder
			s := bot.NewSyncer(matrix.SyncOptions{ReplayHistory: tc.replay, Timeout: 2 * time.Second})
			s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
				if e.RoomID == room {
					got.add(e.Text())
				}
				return nil
			})
			startSyncer(t, s)
			syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
			mustSend(t, alice, room, "new")
			if g := got.waitFor(t, "new"); !slices.Equal(g, tc.want) {
				t.Errorf("delivered %q, want %q", g, tc.want)
			}
		})
	}
}

// TestSyncFillsGap: when more happened in a room while the bot was away than one sync
// returns, the missing events are fetched: none is skipped, none repeated.
func TestSyncFillsGap(t *testing.T) {
	const n = 70 // more than the syncer's timeline limit
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	room := syncRoom(t, alice, bot)

	var got syncRecorder
	record := func(ctx context.Context, e *matrix.Event) error {
		got.add(e.Text())
		return nil
	}
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	var committedAt atomic.Uint64 // the batch count once "before" is committed
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		committedAt.Store(s.Stats().Batches + 1)
		return record(ctx, e)
	})
	stop := startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	mustSend(t, alice, room, "before")
	syncWait(t, "the batch with the message to be committed", func() bool {
		n := committedAt.Load()
		return n > 0 && s.Stats().Batches >= n
	})
	stop()

	want := []string{"before"}
	for i := range n {
		want = append(want, fmt.Sprintf("gap %02d", i))
		mustSend(t, alice, room, want[len(want)-1])
	}
	s = bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	s.OnMessage(record)
	startSyncer(t, s)
	if g := got.waitFor(t, want[len(want)-1]); !slices.Equal(g, want) {
		t.Errorf("delivered %d messages:\n%q\nwant %d:\n%q", len(g), g, len(want), want)
	}
}

// TestAutoJoin: invites from allowed inviters are accepted, others only reported.
func TestAutoJoin(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	mallory := srv.Client(t, "mallory")
	ctx := t.Context()

	var invites syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{
		Timeout:  2 * time.Second,
		AutoJoin: &matrix.AutoJoinPolicy{Users: []id.UserID{alice.UserID}},
	})
	s.OnInvite(func(ctx context.Context, e *matrix.Event) error {
		invites.add(string(e.Sender))
		return nil
	})
	startSyncer(t, s)

	joined := func(room id.RoomID) bool {
		resp, err := bot.Mautrix().JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(resp.JoinedRooms, room)
	}
	for _, tc := range []struct {
		inviter *mautrix.Client
		join    bool
	}{{alice, true}, {mallory, false}} {
		resp, err := tc.inviter.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.UserID()}})
		if err != nil {
			t.Fatal(err)
		}
		// The policy has acted by the time OnInvite handlers run.
		invites.waitFor(t, string(tc.inviter.UserID))
		if got := joined(resp.RoomID); got != tc.join {
			t.Errorf("invite from %s: joined %v, want %v", tc.inviter.UserID, got, tc.join)
		}
	}
}

func TestAutoJoinPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  *matrix.AutoJoinPolicy
		inviter id.UserID
		want    bool
	}{
		{"nil policy", nil, "@alice:agency.example", false},
		{"empty policy", &matrix.AutoJoinPolicy{}, "@alice:agency.example", false},
		{"listed user", &matrix.AutoJoinPolicy{Users: []id.UserID{"@alice:agency.example"}}, "@alice:agency.example", true},
		{"other user", &matrix.AutoJoinPolicy{Users: []id.UserID{"@alice:agency.example"}}, "@bob:agency.example", false},
		{"listed server", &matrix.AutoJoinPolicy{Servers: []string{"agency.example"}}, "@bob:agency.example", true},
		{"server case", &matrix.AutoJoinPolicy{Servers: []string{"Agency.Example"}}, "@bob:agency.example", true},
		{"server with port", &matrix.AutoJoinPolicy{Servers: []string{"agency.example"}}, "@bob:agency.example:8448", false},
		{"suffix is not the server", &matrix.AutoJoinPolicy{Servers: []string{"agency.example"}}, "@eve:evil-agency.example", false},
		{"malformed inviter", &matrix.AutoJoinPolicy{Servers: []string{""}}, "alice", false},
		{"server approved", &matrix.AutoJoinPolicy{AllowServer: func(s string) bool { return s == "member.example:8448" }}, "@bob:member.example:8448", true},
		{"server not approved", &matrix.AutoJoinPolicy{AllowServer: func(s string) bool { return s == "member.example" }}, "@eve:other.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Allows(tc.inviter); got != tc.want {
				t.Errorf("Allows(%s) = %v, want %v", tc.inviter, got, tc.want)
			}
		})
	}
}

// TestHandlerErrorsAndPanics: a handler that fails or panics is counted and logged, and
// neither stops the other handlers nor the batch.
func TestHandlerErrorsAndPanics(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	room := syncRoom(t, alice, bot)

	var got syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		switch e.Text() {
		case "boom":
			fields := strings.Fields(e.Text())
			_ = fields[1] // a bug: index out of range
		case "fail":
			return errors.New("case system unavailable")
		}
		return nil
	})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		got.add(e.Text())
		return nil
	})
	startSyncer(t, s)
	// Sent before the first sync, a message is history, which this Syncer does not replay.
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	for _, b := range []string{"boom", "fail", "after"} {
		mustSend(t, alice, room, b)
	}
	if g := got.waitFor(t, "after"); !slices.Equal(g, []string{"boom", "fail", "after"}) {
		t.Errorf("second handler saw %q", g)
	}
	if n := s.Stats().HandlerErrors; n != 2 {
		t.Errorf("HandlerErrors = %d, want 2", n)
	}
}

// TestHandlerReplyOnce: a batch cut short is delivered again by the next Run, and the answer
// a handler gives the second time is recognised as the one already sent.
func TestHandlerReplyOnce(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	room := syncRoom(t, alice, bot)

	var pendings []*matrix.Pending
	run := func(send bool) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
		s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
			p, err := e.Reply(ctx, matrix.Notice("pong"))
			if err != nil {
				return err
			}
			pendings = append(pendings, p)
			cancel() // as if the process ended before the batch was committed
			return nil
		})
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx) }()
		if send {
			syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
			mustSend(t, alice, room, "ping")
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(matrixtest.WaitTimeout):
			t.Fatal("the handler never saw the message")
		}
	}
	run(true)
	run(false)
	if len(pendings) != 2 {
		t.Fatalf("the handler replied %d times, want 2 (once per delivery)", len(pendings))
	}
	if pendings[0].Duplicate || !pendings[1].Duplicate || pendings[0].ID != pendings[1].ID {
		t.Errorf("replies: first %+v, second %+v; want the second to be the first again", *pendings[0], *pendings[1])
	}
	evt := matrixtest.WaitMessage(t, alice, room, "pong")
	if evt.Sender != bot.UserID() {
		t.Errorf("pong from %s", evt.Sender)
	}
}

// TestSyncCancel: Run returns nil promptly when its context ends, during a long poll or
// before it starts.
func TestSyncCancel(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")

	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 30 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	time.Sleep(200 * time.Millisecond) // into the long poll
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run took %v to return after cancel", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}

	if err := bot.NewSyncer(matrix.SyncOptions{}).Run(ctx); err != nil {
		t.Errorf("Run with a cancelled context: %v", err)
	}
}

// TestSyncRevokedToken: when the session is logged out elsewhere, Run stops with
// ErrUnknownToken instead of retrying forever.
func TestSyncRevokedToken(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")

	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second})
	errc := make(chan error, 1)
	go func() { errc <- s.Run(t.Context()) }()
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	if _, err := srv.Client(t, "bot").LogoutAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, matrix.ErrUnknownToken) {
			t.Errorf("Run returned %v, want ErrUnknownToken", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run went on with a revoked token")
	}
}

// TestSyncSurvivesOutage: the homeserver goes away for a few seconds; the syncer backs off,
// comes back, and delivers what was sent after the restart.
func TestSyncSurvivesOutage(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := newClient(t, srv, "bot")
	alice := srv.Client(t, "alice")
	room := syncRoom(t, alice, bot)

	var got syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		got.add(e.Text())
		return nil
	})
	startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	mustSend(t, alice, room, "before")
	got.waitFor(t, "before")

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	mustSend(t, alice, room, "after")
	if g := got.waitFor(t, "after"); !slices.Equal(g, []string{"before", "after"}) {
		t.Errorf("delivered %q", g)
	}
	if s.Stats().SyncErrors == 0 {
		t.Error("no sync errors counted during the outage")
	}
}

// syncRoom is a room alice created and bot joined.
func syncRoom(t *testing.T, alice *mautrix.Client, bot *matrix.Client) id.RoomID {
	t.Helper()
	resp, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bot.Mautrix().JoinRoomByID(t.Context(), resp.RoomID); err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}

func mustSend(t *testing.T, from *mautrix.Client, room id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := from.SendText(t.Context(), room, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return resp.EventID
}

// startSyncer runs s until the returned stop is called or the test ends, and checks that Run
// then returns nil.
func startSyncer(t *testing.T, s *matrix.Syncer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Syncer.Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Syncer.Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// syncWait polls cond until it holds, and fails the test after a minute.
func syncWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// syncRecorder collects what handlers saw, in order.
type syncRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *syncRecorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *syncRecorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor waits until want was recorded and returns everything recorded so far.
func (r *syncRecorder) waitFor(t *testing.T, want string) []string {
	t.Helper()
	syncWait(t, want, func() bool { return slices.Contains(r.snapshot(), want) })
	return r.snapshot()
}

// TestSyncReplayHistoryJoinShownLate: with ReplayHistory, a room the account joined before
// the Syncer started is replayed also when the server's first sync answer does not show the
// join yet (Dendrite answers /sync from a stream that can lag behind a join that returned, seen
// under load in examples/notify-case). The lag is injected: a proxy answers the Syncer's first
// /sync with what the real server answered just before the join; everything else is the real
// server's. Before, the join seen in the second batch made everything before it history.
func TestSyncReplayHistoryJoinShownLate(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "bot")
	alice := srv.Client(t, "alice")
	ctx := t.Context()

	var stale atomic.Pointer[[]byte] // the first /sync answer to give, if set
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b := stale.Load(); b != nil && r.URL.Path == "/_matrix/client/v3/sync" && r.URL.Query().Get("since") == "" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(*b)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	bot := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("bot", password), DB: testDB(t)})
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	mustSend(t, alice, room, "old 1")
	mustSend(t, alice, room, "old 2")
	matrixtest.WaitMessage(t, alice, room, "old 2")
	matrixtest.Eventually(t, func() error { // the server's answer from before the join: bot invited
		before, err := bot.Mautrix().SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			return err
		}
		if _, ok := before.Rooms.Invite[room]; !ok {
			return fmt.Errorf("the invite is not in the bot's sync yet")
		}
		b, err := json.Marshal(before)
		if err != nil {
			return err
		}
		stale.Store(&b)
		return nil
	})
	if _, err := bot.Mautrix().JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	var got syncRecorder
	s := bot.NewSyncer(matrix.SyncOptions{ReplayHistory: true, Timeout: time.Second})
	s.OnMessage(func(ctx context.Context, e *matrix.Event) error {
		if e.RoomID == room {
			got.add(e.Text())
		}
		return nil
	})
	startSyncer(t, s)
	syncWait(t, "the first sync", func() bool { return s.Stats().Batches >= 1 })
	mustSend(t, alice, room, "new")
	if g, want := got.waitFor(t, "new"), []string{"old 1", "old 2", "new"}; !slices.Equal(g, want) {
		t.Errorf("delivered %q, want %q", g, want)
	}
}
