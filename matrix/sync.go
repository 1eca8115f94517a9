package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/samtalhq/samtal/internal/backoff"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SyncOptions configure a Syncer. The zero value suits a bot: new events only, invites handed
// to OnInvite handlers but not accepted.
type SyncOptions struct {
	Timeout       time.Duration   // long-poll timeout of one sync request, below the HTTP client's; 0 means 30 s
	ReplayHistory bool            // on the very first sync (no stored token) also deliver the messages already in rooms (see Syncer); by default only invites are
	IncludeOwn    bool            // deliver events this account sent (from any device); by default they are skipped
	AutoJoin      *AutoJoinPolicy // which invites to accept before OnInvite handlers run; nil accepts none
	MinBackoff    time.Duration   // first wait after a failed sync; 0 means 1 s
	MaxBackoff    time.Duration   // longest wait between failed syncs; 0 means 60 s
	// MinInterval is the shortest time from the start of one long-poll sync to the start of
	// the next; 0 means none. A sync returns as soon as something happens, so in a busy room
	// a Syncer asks once per event; with MinInterval it gets what happened meanwhile in one
	// batch, which saves the homeserver and this process a request, a response and a commit
	// per event. Events, invites and the encryption's to-device messages then arrive up to
	// MinInterval later; a bot that mostly sends (the mail gateway) loses nothing by it.
	// Must be below Timeout.
	MinInterval time.Duration
	// MarkRead moves this account's read marker (m.fully_read, which only the account itself
	// sees) in each room to the newest event a batch had there, at most once a second per
	// room. A homeserver keeps a member's notifications until they are read and counts them
	// on each new event in the room (Dendrite: a COUNT over them), so a bot that never reads
	// makes each message in its rooms cost a little more than the one before, for months.
	MarkRead bool
}

// AutoJoinPolicy says whose invites a Syncer accepts: an invite is accepted if the inviter is
// listed in Users, has an account on one of Servers, or on a server AllowServer approves. An
// empty policy accepts nothing.
type AutoJoinPolicy struct {
	Users   []id.UserID
	Servers []string // server names, such as "agency.example"
	// AllowServer, when set, is asked about the inviter's server name (with its port, if it
	// has one), such as federation.Watcher.HasServer to accept invites from members only.
	AllowServer func(server string) bool
}

// Allows reports whether an invite from inviter is to be accepted.
func (p *AutoJoinPolicy) Allows(inviter id.UserID) bool {
	if p == nil {
		return false
	}
	if slices.Contains(p.Users, inviter) {
		return true
	}
	server := inviter.Homeserver()
	if server == "" {
		return false
	}
	if slices.ContainsFunc(p.Servers, func(s string) bool { return strings.EqualFold(s, server) }) {
		return true
	}
	return p.AllowServer != nil && p.AllowServer(server)
}

// SyncStats are a Syncer's counters since it was made, for metrics and health checks.
type SyncStats struct {
	Batches       uint64    // sync responses handled and committed
	Events        uint64    // events handed to handlers
	HandlerErrors uint64    // handler calls that failed or panicked, and failed auto-joins
	SyncErrors    uint64    // failed sync requests and gap fills, each followed by a backoff
	Undecryptable uint64    // encrypted events that could not be decrypted when they arrived
	LateDecrypted uint64    // of those, decrypted and handed out later, when their keys came
	Rejected      uint64    // encrypted events refused for good: tampered, replayed, untrusted sender
	LastBatch     time.Time // when the last batch was committed; zero before the first
}

// Syncer receives events for a Client and hands them to handlers.
//
// Delivery is at least once: the sync token is stored only after the handlers for a whole
// batch have returned, so a crash, a kill or a cancelled context mid-batch means the batch is
// delivered again by the next Run. Handlers deduplicate by event ID where a repeat would hurt;
// Event.Reply does so for answers by itself.
//
// Within a batch, events are handed over one at a time, in timeline order per room, rooms in a
// fixed order, and each event to the matching handlers in the order they were registered. A
// handler's error or panic is logged and counted; it does not hold up the batch, so one
// unprocessable event cannot stop a bot for good.
//
// A room's events from before this account joined it are history and not delivered, with one
// exception: ReplayHistory on the very first sync. The rooms it replays are those the account
// had joined when the Syncer started, also one whose join the server's sync stream shows only
// in a later batch (a homeserver answers /sync from a stream that can lag behind a join that
// has returned); that memory is not kept across a restart of the Syncer. When the server leaves out part of a room's
// timeline because too much happened since the last sync, the Syncer fetches the missing
// events (up to 1000 per room and batch) so that none is skipped. After a failed sync, and
// once whenever Run starts, the Syncer asks again from the token before its last batch: a
// homeserver going down can answer the sync in progress with events left out (Dendrite does), and
// a sync that fails next, or a restart of both (a machine reboot), is how that shows. The events
// that batch handed out are stored with the token and not handed out again, also after a
// restart, and neither are its to-device messages handed to the encryption again (an Olm
// message decrypts only once); only a batch of more than 5000 events and to-device messages is
// not gone over again after a restart (its list is not stored), so a restart adds no repeats to
// the at-least-once above.
//
// Run one Syncer per session at a time: they share the stored token.
type Syncer struct {
	c    *Client
	opts SyncOptions

	mu       sync.Mutex
	handlers []handler

	running atomic.Bool

	// replay holds, during a first sync with ReplayHistory, the rooms the account had joined
	// when it started that no batch has shown yet; only Run's goroutine uses it.
	replay map[id.RoomID]bool

	// unmarked holds, with MarkRead, each room's newest event handed out whose read marker is
	// not set yet, and marked when it was last set; only Run's goroutine uses them.
	unmarked map[id.RoomID]id.EventID
	marked   map[id.RoomID]time.Time

	batches, events, handlerErrors, syncErrors atomic.Uint64
	undecryptable, lateDecrypted, rejected     atomic.Uint64
	lastBatch                                  atomic.Int64 // Unix milliseconds
}

const (
	// timelineLimit is how many events per room one sync returns; a longer timeline is
	// marked limited and the Syncer fills the gap from /messages.
	timelineLimit = 50
	// maxGapEvents bounds how far back a gap is filled, per room and batch.
	maxGapEvents = 1000
	// gapPage is how many events one /messages request fetches while filling a gap.
	gapPage = 100
)

// syncFilter keeps a sync to what the Syncer delivers: room timelines of at most limit events,
// invites and leaves. Presence, typing, receipts and account data are left out; member state
// is lazy-loaded.
func syncFilter(limit int) string {
	return fmt.Sprintf(`{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},`+
		`"room":{"timeline":{"limit":%d},"state":{"lazy_load_members":true},`+
		`"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}}}`, limit)
}

// NewSyncer returns a Syncer for c. Register handlers, then call Run.
func (c *Client) NewSyncer(opts SyncOptions) *Syncer {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 60 * time.Second
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	opts.MinInterval = min(max(opts.MinInterval, 0), opts.Timeout/2)
	return &Syncer{c: c, opts: opts, unmarked: map[id.RoomID]id.EventID{}, marked: map[id.RoomID]time.Time{}}
}

// ErrSyncerRunning is returned by Run when the Syncer is already running.
var ErrSyncerRunning = errors.New("matrix: syncer is already running")

// Run syncs and hands events to the handlers until ctx is done, and then returns nil. A batch
// in progress when ctx ends is not committed and is delivered again by the next Run.
//
// Failed syncs (the homeserver down, a network error, a rate limit) are retried with
// exponential backoff and jitter, for as long as it takes. Run returns an error only when it
// cannot go on: the session was revoked (errors.Is(err, ErrUnknownToken)), the stored token
// cannot be read, or Run is already running.
func (s *Syncer) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrSyncerRunning
	}
	defer s.running.Store(false)
	s.c.syncing.start(s.opts.Timeout + syncCurrentMargin)
	defer s.c.syncing.stop()
	since, back, err := loadPosition(ctx, s.c.db, s.c.name)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log := s.c.log
	if since == "" {
		log.Info("sync: first sync of this session", "replay_history", s.opts.ReplayHistory)
	}
	failures := 0
	// See rewind: after a failed sync, and once when Run starts, the last batch is asked for
	// again.
	restart := back.since != ""
	for {
		timeout := s.opts.Timeout
		if since == "" || failures > 0 || restart {
			timeout = 0 // answer at once: nothing to wait for, checking the server is back, or going over the last batch
		}
		filter := syncFilter(timelineLimit)
		if since == "" && !s.opts.ReplayHistory {
			// The timelines are skipped: only each room's newest event is needed, as the
			// point a later gap is filled back to.
			filter = syncFilter(1)
		}
		from, skip := back.from(since, failures > 0 || restart)
		var resp *mautrix.RespSync
		var next rewind
		started := time.Now()
		err := s.startReplay(ctx, since)
		if err == nil {
			resp, err = s.c.mx.SyncRequest(ctx, int(timeout.Milliseconds()), from, filter, false, "")
			if err == nil {
				next, err = s.process(ctx, resp, from, skip, back)
			} else {
				err = fmt.Errorf("matrix: sync: %w", wrapErr(err))
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrUnknownToken) {
				log.Error("sync: the session was revoked", "err", err)
				return err
			}
			failures++
			s.syncErrors.Add(1)
			delay := s.backoff(failures, err)
			log.Warn("sync failed; retrying", "failures", failures, "retry_in", delay, "err", err)
			if !backoff.Sleep(ctx, delay) {
				return nil
			}
			continue
		}
		if failures > 0 {
			log.Info("sync: recovered", "after_failures", failures, "rewound", skip != nil)
			failures = 0
		}
		back, restart = next, false
		for room := range s.replay {
			_, joined := resp.Rooms.Join[room]
			_, left := resp.Rooms.Leave[room]
			if joined || left {
				delete(s.replay, room)
			}
		}
		since = resp.NextBatch
		if s.opts.MarkRead {
			s.markRead(ctx)
		}
		// Handed out and committed: a pause before the next long poll lets what happens
		// meanwhile come as one batch (MinInterval).
		if wait := s.opts.MinInterval - time.Since(started); timeout > 0 && wait > 0 && !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// startReplay notes, before the first sync with ReplayHistory, the rooms the account has
// joined, from the server's room state (which, unlike its sync stream, has every join that
// returned).
func (s *Syncer) startReplay(ctx context.Context, since string) error {
	if since != "" || !s.opts.ReplayHistory || s.replay != nil {
		return nil
	}
	resp, err := s.c.mx.JoinedRooms(ctx)
	if err != nil {
		return fmt.Errorf("matrix: sync: joined rooms: %w", wrapErr(err))
	}
	s.replay = make(map[id.RoomID]bool, len(resp.JoinedRooms))
	for _, room := range resp.JoinedRooms {
		s.replay[room] = true
	}
	return nil
}

// syncCurrentMargin is how much longer than its long-poll timeout a running Syncer may go
// without a completed sync before the client stops counting as Syncing.
const syncCurrentMargin = 5 * time.Second

// syncState is what Client.Syncing answers from.
type syncState struct {
	mu      sync.Mutex
	running int           // Syncers in Run
	window  time.Duration // the longest a sync of the running Syncers takes when all is well
	last    time.Time     // when a sync response was last processed
}

func (st *syncState) start(window time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.running++
	st.window = max(st.window, window)
}

func (st *syncState) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.running--
	if st.running == 0 {
		st.window, st.last = 0, time.Time{}
	}
}

func (st *syncState) synced() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.last = time.Now()
}

// Syncing reports whether a Syncer of this client is running now and has processed a sync
// response within its long-poll timeout and a few seconds: then what the client knows of rooms
// from sync (members, their devices) lags the server by at most one sync round trip. A Syncer
// that stopped, or that cannot reach the server, does not count.
func (c *Client) Syncing() bool {
	st := &c.syncing
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.running > 0 && !st.last.IsZero() && time.Since(st.last) < st.window
}

// Stats returns the Syncer's counters.
func (s *Syncer) Stats() SyncStats {
	st := SyncStats{
		Batches:       s.batches.Load(),
		Events:        s.events.Load(),
		HandlerErrors: s.handlerErrors.Load(),
		SyncErrors:    s.syncErrors.Load(),
		Undecryptable: s.undecryptable.Load(),
		LateDecrypted: s.lateDecrypted.Load(),
		Rejected:      s.rejected.Load(),
	}
	if ms := s.lastBatch.Load(); ms != 0 {
		st.LastBatch = time.UnixMilli(ms)
	}
	return st
}

// batch is one sync response made ready for the handlers.
type batch struct {
	events []*Event
	// last is each room's newest timeline event: where a gap in a later sync is filled to.
	last map[id.RoomID]id.EventID
	left []id.RoomID // rooms this account left, whose last event is forgotten
	keys []string    // deliveryKey of each event handed out, for a rewind

	utd      []undecryptable // encrypted events to retry when their keys arrive
	resolved []id.EventID    // stored undecryptable events decrypted or given up on now
	retried  []id.EventID    // stored undecryptable events tried again in vain
}

// process hands one sync response to the handlers and then commits its token. It returns the
// context's error, without committing, when ctx ends before the handlers are through.
//
// With encryption, the crypto machine sees the response first (room keys arrive as to-device
// messages in the same response as the events they unlock), then encrypted events are
// decrypted; those that cannot be yet are stored and retried with every later batch, and handed
// out when their keys come, after the batch's own events.
//
// Events whose deliveryKey is in skip were handed out before (see rewind) and are left out; skip
// is not nil when since is back's rewind point. The rewind point after the batch is committed
// with it and returned.
func (s *Syncer) process(ctx context.Context, resp *mautrix.RespSync, since string, skip map[string]bool, back rewind) (rewind, error) {
	var toDevice []string // keys of the to-device messages handed to the crypto machine
	if enc := s.c.encryption(); enc != nil {
		// Those the batch a rewind asks for again handed over are left out (see rewind). Its
		// device list changes and one-time key counts are not: the first makes mautrix ask
		// for those keys once more, the second is the server's count now, not then.
		toDevice = dropHandedOver(resp, skip)
		if err := enc.ProcessSync(ctx, resp, since); err != nil {
			return rewind{}, fmt.Errorf("matrix: sync: crypto: %w", err)
		}
	}
	s.c.syncing.synced()
	s.noticeEncryption(resp)
	b, err := s.collect(ctx, resp, since, skip)
	if err != nil {
		return rewind{}, err
	}
	b.keys = append(b.keys, toDevice...)
	late, drop, again, err := s.retryUndecryptable(ctx)
	if err != nil {
		return rewind{}, err
	}
	b.retried = again
	for _, evt := range late {
		b.resolved = append(b.resolved, evt.ID)
	}
	b.resolved = append(b.resolved, drop...)
	for i, evt := range append(b.events, late...) {
		if err := ctx.Err(); err != nil {
			return rewind{}, err
		}
		if i >= len(b.events) {
			s.dispatch(ctx, evt) // decrypted by retryUndecryptable
			continue
		}
		evt, ok, reason, final := s.decrypt(ctx, evt)
		if final {
			s.rejected.Add(1)
			s.c.log.Error("sync: encrypted event refused", "room", evt.RoomID, "event", evt.ID, "sender", evt.Sender, "reason", reason)
			continue
		}
		if !ok {
			s.undecryptable.Add(1)
			s.c.log.Warn("sync: cannot decrypt event yet; will retry when keys arrive", "room", evt.RoomID, "event", evt.ID, "sender", evt.Sender, "reason", reason)
			b.utd = append(b.utd, undecryptable{evt: evt.Event, reason: reason})
			continue // handed out once it can be read
		}
		s.dispatch(ctx, evt)
	}
	if err := ctx.Err(); err != nil {
		return rewind{}, err
	}
	next := back.after(since, skip != nil, b.keys)
	if err := s.commit(ctx, resp.NextBatch, next, b); err != nil {
		// The batch is handed out again from the old token after a backoff: what could not
		// be decrypted must be stored before the token moves on, or it would be lost.
		return rewind{}, fmt.Errorf("matrix: sync: commit batch: %w", err)
	}
	s.batches.Add(1)
	s.lastBatch.Store(time.Now().UnixMilli())
	if s.opts.MarkRead {
		for room, evt := range b.last {
			if evt != "" {
				s.unmarked[room] = evt
			}
		}
		for _, room := range b.left {
			delete(s.unmarked, room)
			delete(s.marked, room)
		}
	}
	return next, nil
}

// markReadEvery is how often, at most, MarkRead moves the read marker in one room.
const markReadEvery = time.Second

// markRead moves the read marker of each room with events handed out since it was last moved
// there, unless that was less than markReadEvery ago (then the next batch, or the next empty
// answer of a long poll, does). A marker that cannot be set now is tried with the next batch:
// it only saves the homeserver work.
func (s *Syncer) markRead(ctx context.Context) {
	now := time.Now()
	for room, evt := range s.unmarked {
		if now.Sub(s.marked[room]) < markReadEvery {
			continue
		}
		if err := s.c.mx.SetReadMarkers(ctx, room, &mautrix.ReqSetReadMarkers{FullyRead: evt}); err != nil {
			if ctx.Err() == nil {
				s.c.log.Debug("sync: cannot move the read marker; will try again", "room", room, "err", wrapErr(err))
			}
			continue
		}
		s.marked[room] = now
		delete(s.unmarked, room)
	}
}

// noticeEncryption marks the rooms whose state says they are encrypted, from every state and
// timeline event of the response (handed out or not), so that sends never rely on an older
// answer.
func (s *Syncer) noticeEncryption(resp *mautrix.RespSync) {
	for room, r := range resp.Rooms.Join {
		for _, evt := range append(r.State.Events, r.Timeline.Events...) {
			if evt != nil && evt.Type.Type == event.StateEncryption.Type && evt.StateKey != nil {
				s.c.markEncrypted(room)
				break
			}
		}
	}
}

// collect turns a sync response into the events to deliver, in order: joined rooms, then left
// rooms, then invites, rooms sorted by ID so that a repeated batch comes in the same order.
// Events whose deliveryKey is in skip are left out.
func (s *Syncer) collect(ctx context.Context, resp *mautrix.RespSync, since string, skip map[string]bool) (*batch, error) {
	b := &batch{last: map[id.RoomID]id.EventID{}}
	seen := map[id.EventID]bool{}
	add := func(room id.RoomID, evts []*event.Event, invite bool) {
		for _, raw := range evts {
			if raw == nil || (raw.ID != "" && seen[raw.ID]) {
				continue
			}
			if raw.ID != "" {
				seen[raw.ID] = true
			}
			if !invite && !s.opts.IncludeOwn && raw.Sender == s.c.UserID() {
				continue
			}
			key := deliveryKey(room, raw, invite)
			if key != "" && skip[key] {
				continue // handed out by the batch a rewind asks for again
			}
			if key != "" {
				b.keys = append(b.keys, key)
			}
			b.events = append(b.events, s.prepare(room, raw, invite))
		}
	}
	for _, room := range slices.Sorted(maps.Keys(resp.Rooms.Join)) {
		tl := resp.Rooms.Join[room].Timeline
		if n := len(tl.Events); n > 0 {
			b.last[room] = tl.Events[n-1].ID
		}
		evts, err := s.timeline(ctx, room, tl, since)
		if err != nil {
			return nil, err
		}
		add(room, evts, false)
	}
	for _, room := range slices.Sorted(maps.Keys(resp.Rooms.Leave)) {
		evts, err := s.timeline(ctx, room, resp.Rooms.Leave[room].Timeline, since)
		if err != nil {
			return nil, err
		}
		add(room, evts, false)
		b.left = append(b.left, room)
	}
	for _, room := range slices.Sorted(maps.Keys(resp.Rooms.Invite)) {
		for _, raw := range resp.Rooms.Invite[room].State.Events {
			if raw.Type.Type == event.StateMember.Type && raw.GetStateKey() == string(s.c.UserID()) {
				add(room, []*event.Event{raw}, true)
				break
			}
		}
	}
	return b, nil
}

// timeline returns the events of a room's timeline to deliver: none on a first sync unless
// history is replayed (also for a room joined before the first sync that shows only later); from this account's join on in a room just joined; and with the events
// the server left out of a limited timeline fetched and put in front.
func (s *Syncer) timeline(ctx context.Context, room id.RoomID, tl mautrix.SyncTimeline, since string) ([]*event.Event, error) {
	evts := tl.Events
	if since == "" || s.replay[room] {
		if !s.opts.ReplayHistory {
			return nil, nil
		}
		return evts, nil
	}
	for i := len(evts) - 1; i >= 0; i-- {
		if s.ownJoin(evts[i]) {
			return evts[i:], nil // what came before the join is history
		}
	}
	if slices.ContainsFunc(evts, s.ownInvite) {
		// Invited in this timeline and not joined in it: all of it, and any gap before it,
		// is from before the join. (Dendrite's sync can show a room as joined while its
		// timeline still ends before the join, which the next batch then brings.)
		return nil, nil
	}
	if !tl.Limited || tl.PrevBatch == "" {
		return evts, nil
	}
	gap, err := s.fillGap(ctx, room, tl.PrevBatch, since)
	if err != nil {
		return nil, err
	}
	return append(gap, evts...), nil
}

// fillGap fetches, oldest first, the events of room from before the token from back to the
// newest event an earlier batch had from room, to since, or to this account's join, whichever
// comes first. (Some servers, Dendrite among them, ignore the to=since bound of /messages;
// the stored event is what stops the walk there.)
func (s *Syncer) fillGap(ctx context.Context, room id.RoomID, from, since string) ([]*event.Event, error) {
	anchor, err := s.lastEvent(ctx, room)
	if err != nil {
		return nil, err
	}
	var back []*event.Event
	done := func() []*event.Event {
		slices.Reverse(back)
		return back
	}
	for len(back) < maxGapEvents {
		resp, err := s.c.mx.Messages(ctx, room, from, since, mautrix.DirectionBackward, nil, gapPage)
		if err != nil {
			return nil, fmt.Errorf("matrix: sync: fetch the events missing from %s: %w", room, wrapErr(err))
		}
		for _, evt := range resp.Chunk {
			if anchor != "" && evt.ID == anchor {
				return done(), nil
			}
			back = append(back, evt)
			if s.ownJoin(evt) {
				return done(), nil
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			return done(), nil
		}
		from = resp.End
	}
	s.c.log.Warn("sync: too many events missing from a room's timeline; older ones are skipped",
		"room", room, "delivered", len(back))
	return done(), nil
}

// ownJoin reports whether evt is this account joining a room (not a profile change, which is
// a join following a join).
func (s *Syncer) ownJoin(evt *event.Event) bool {
	if evt.Type.Type != event.StateMember.Type || evt.GetStateKey() != string(s.c.UserID()) {
		return false
	}
	if membership(&evt.Content) != string(event.MembershipJoin) {
		return false
	}
	prev := evt.Unsigned.PrevContent
	return prev == nil || membership(prev) != string(event.MembershipJoin)
}

// ownInvite reports whether evt is this account being invited to a room.
func (s *Syncer) ownInvite(evt *event.Event) bool {
	return evt.Type.Type == event.StateMember.Type && evt.GetStateKey() == string(s.c.UserID()) &&
		membership(&evt.Content) == string(event.MembershipInvite)
}

func membership(c *event.Content) string {
	m, _ := c.Raw["membership"].(string)
	return m
}

// prepare makes a raw event from a sync into what handlers get: room ID and type class set,
// content parsed where mautrix knows the type (else left raw).
func (s *Syncer) prepare(room id.RoomID, raw *event.Event, invite bool) *Event {
	raw.RoomID = room
	if raw.StateKey != nil {
		raw.Type.Class = event.StateEventType
	} else {
		raw.Type.Class = event.MessageEventType
	}
	err := raw.Content.ParseRaw(raw.Type)
	if err != nil && !errors.Is(err, event.ErrUnsupportedContentType) && !errors.Is(err, event.ErrContentAlreadyParsed) {
		s.c.log.Debug("sync: event content does not parse", "room", room, "event", raw.ID, "type", raw.Type.Type, "err", err)
	}
	return &Event{Event: raw, Client: s.c, invite: invite}
}

// commit stores the token of a batch whose handlers have returned, with the rewind point after
// it and each room's newest event, in one transaction.
func (s *Syncer) commit(ctx context.Context, next string, back rewind, b *batch) error {
	prev, seen, err := back.stored()
	if err != nil {
		return fmt.Errorf("matrix: sync: store rewind point: %w", err)
	}
	return s.c.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := s.storeUndecryptable(ctx, b); err != nil {
			return err
		}
		for room, evt := range b.last {
			if evt == "" {
				continue
			}
			if _, err := s.c.q.Exec(ctx, `INSERT INTO samtal_sync_room (session, room_id, event_id) VALUES ($1, $2, $3)
				ON CONFLICT (session, room_id) DO UPDATE SET event_id = excluded.event_id`, s.c.name, room, evt); err != nil {
				return fmt.Errorf("matrix: sync: store last event of %s: %w", room, err)
			}
		}
		for _, room := range b.left {
			if _, err := s.c.db.Exec(ctx, `DELETE FROM samtal_sync_room WHERE session = $1 AND room_id = $2`, s.c.name, room); err != nil {
				return fmt.Errorf("matrix: sync: forget left room %s: %w", room, err)
			}
		}
		if _, err := s.c.q.Exec(ctx, `INSERT INTO samtal_sync (session, next_batch, prev_batch, prev_seen) VALUES ($1, $2, $3, $4)
			ON CONFLICT (session) DO UPDATE SET next_batch = excluded.next_batch, prev_batch = excluded.prev_batch,
			prev_seen = excluded.prev_seen`, s.c.name, next, prev, seen); err != nil {
			return fmt.Errorf("matrix: sync: store sync token: %w", err)
		}
		return nil
	})
}

func (s *Syncer) lastEvent(ctx context.Context, room id.RoomID) (id.EventID, error) {
	var evt id.EventID
	err := s.c.db.QueryRow(ctx, `SELECT event_id FROM samtal_sync_room WHERE session = $1 AND room_id = $2`, s.c.name, room).Scan(&evt)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("matrix: sync: load last event of %s: %w", room, err)
	}
	return evt, nil
}

// backoff is the wait after the given number of failed syncs in a row: what the server asked
// for with a rate limit, else exponential from MinBackoff to MaxBackoff with equal jitter, so
// that many clients that lost the same server do not come back at once.
func (s *Syncer) backoff(failures int, err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter > 0 {
		return backoff.Server(he.RetryAfter)
	}
	return backoff.Delay(failures, s.opts.MinBackoff, s.opts.MaxBackoff)
}
