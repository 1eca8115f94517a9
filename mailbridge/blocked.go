package mailbridge

import (
	"context"
	"sync"
	"time"
)

// Rooms the delivery worker found full (claim.go). A pass that finds only mail for full rooms
// posts nothing: with a burst into one room, a pass for every mail spooled, and for every post
// sent, took a core from the homeserver on the same machine while a pass read the whole
// backlog, and still costs a few queries each now that it reads a room at a time. So mail spooled for rooms that are full does not wake the
// worker, and the confirmer wakes it when such a room has fewer than refillBelow posts unsent.
// What another instance does to a room (PostgreSQL, several gateways) is not seen here: an
// entry counts for fullRoomFor, and the worker looks again at least that often while a room is
// full.

// fullRoomFor is how long a room found full keeps new mail for it from waking the worker.
const fullRoomFor = time.Second

// fullRooms are the targets the worker found full at its last pass, with when.
type fullRooms struct {
	mu sync.Mutex
	at map[string]time.Time
}

// kickFor wakes the delivery worker for a mail spooled for targets, unless each of them is a
// room found full a moment ago.
func (g *Gateway) kickFor(targets []target) {
	if g.full.all(targets, time.Now()) {
		return
	}
	g.kick()
}

// all reports whether every target that is delivered to (not refused) was found full within
// fullRoomFor before now; false for none.
func (f *fullRooms) all(targets []target, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	some := false
	for _, t := range targets {
		if t.refused != "" {
			continue
		}
		at, ok := f.at[t.room]
		if !ok || now.Sub(at) >= fullRoomFor {
			return false
		}
		some = true
	}
	return some
}

// any reports whether some room is taken as full now.
func (f *fullRooms) any(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, at := range f.at {
		if now.Sub(at) < fullRoomFor {
			return true
		}
	}
	return false
}

// noteFull records, after a pass of the worker, which rooms are full now.
func (g *Gateway) noteFull(ctx context.Context) {
	rows, err := g.spool.q.Query(ctx, fullTargets("$1"), refillBelow)
	if err != nil {
		g.full.set(nil)
		return // every mail wakes the worker, as before
	}
	defer rows.Close()
	now := time.Now()
	at := map[string]time.Time{}
	for rows.Next() {
		var t string
		if rows.Scan(&t) != nil {
			g.full.set(nil)
			return
		}
		at[t] = now
	}
	if rows.Err() != nil {
		at = nil
	}
	g.full.set(at)
}

func (f *fullRooms) set(at map[string]time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = at
}

// roomPostedQuery counts a target's ($1) posts unsent.
const roomPostedQuery = `SELECT COUNT(*) FROM samtal_mail_delivery WHERE state = 3 AND target = $1`

// roomsFreed wakes the worker when one of targets, found full, has fewer than refillBelow posts
// unsent now (after the confirmer marked some delivered).
func (g *Gateway) roomsFreed(ctx context.Context, targets []string) {
	g.full.mu.Lock()
	var was []string
	for _, t := range targets {
		if _, ok := g.full.at[t]; ok {
			was = append(was, t)
		}
	}
	g.full.mu.Unlock()
	for _, t := range was {
		var n int
		err := g.spool.q.QueryRow(ctx, roomPostedQuery, t).Scan(&n)
		if err != nil || n < refillBelow {
			g.full.mu.Lock()
			delete(g.full.at, t)
			g.full.mu.Unlock()
			g.kick()
		}
	}
}
