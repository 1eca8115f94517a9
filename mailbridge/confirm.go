package mailbridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/backoff"
	"github.com/samtalhq/samtal/matrix"
)

// Confirmation: a mail that got 250 is delivered only once the homeserver has its events, not
// once they are stored in the matrix outbox. The outbox may still fail an item for good (a
// refusal by a homeserver that is still starting, say), and then nothing else would post it:
// a later Send with the same idempotency key returns the failed item.
//
// So the delivery worker stores the post in the outbox, records the delivery as posted (state
// 3) with the outbox items it became (samtal_mail_delivery_item), and goes on with the next
// mail. The confirmer settles posted deliveries as the outbox reports its outcomes
// (Client.WatchOutcomes): once every item of one is sent, it is delivered (state 1); when one
// failed for good, the delivery goes back to pending with backoff (state 0, and the worker
// requeues the failed items when it posts again), or to the dead letters after
// Options.DeadLetterAfter. It also looks at every posted delivery when it starts (what the
// previous run posted, and whose outcome it did not see) and once every confirmSweep (what
// another instance sharing the session sent, and outcomes it missed).

// statePosted is a delivery whose post is in the outbox, not yet sent (samtal_mail_delivery.state).
const statePosted = 3

// confirmSweep is the longest time between two looks at every posted delivery; the test
// gateways' MaxRetryDelay makes it shorter.
const confirmSweep = 5 * time.Second

// confirmGather is how long the confirmer gathers outcomes after the first before it settles
// them together. Nothing waits on it but the refill of a full room, which holds dozens of
// posts that take longer than this to send.
const confirmGather = 50 * time.Millisecond

// outcomeQueue is how many reported items wait for the confirmer; more make it look at all.
const outcomeQueue = 4096

// postedDelivery is a delivery waiting for its outbox items.
type postedDelivery struct {
	spoolID    int64
	target     string
	attempts   int
	receivedAt time.Time
	items      []int64 // the post first
}

// onOutcome hears an outcome of the outbox. It must not block: when the queue is full, the
// confirmer looks at every posted delivery instead.
func (g *Gateway) onOutcome(o matrix.Outcome) {
	select {
	case g.outcomes <- o.ID:
	default:
		g.lostOutcome.Store(true)
	}
}

// confirmLoop is the confirmer: it runs until Close.
func (g *Gateway) confirmLoop() {
	defer g.worker.Done()
	every := min(confirmSweep, g.opts.MaxRetryDelay)
	tick := time.NewTicker(every)
	defer tick.Stop()
	g.settleAll() // what an earlier run posted
	for {
		select {
		case <-g.ctx.Done():
			return
		case id := <-g.outcomes:
			ids := map[int64]bool{id: true}
			// Outcomes come one at a time, as the outbox sends; taken together for a
			// moment, they cost one look-up and one commit, not one each.
			gather := time.NewTimer(confirmGather)
		more:
			for len(ids) < deliveryBatch*8 {
				select {
				case id := <-g.outcomes:
					ids[id] = true
				case <-gather.C:
					break more
				case <-g.ctx.Done():
					gather.Stop()
					return
				}
			}
			gather.Stop()
			g.settleItems(ids)
		case <-tick.C:
			g.settleAll()
		}
		if g.lostOutcome.Swap(false) {
			g.settleAll()
		}
	}
}

// settleItems settles the posted deliveries that outbox items ids belong to.
func (g *Gateway) settleItems(ids map[int64]bool) {
	list := make([]int64, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	slices.Sort(list)
	var ps []postedDelivery
	seen := map[postedKey]bool{} // two items of one delivery in two chunks
	for chunk := range slices.Chunk(list, postedWithChunk) {
		got, err := g.spool.postedWith(g.ctx, chunk...)
		if err != nil {
			if g.ctx.Err() == nil {
				g.log.Error("read posted deliveries", "err", err)
			}
			return
		}
		for _, p := range got {
			if k := (postedKey{p.spoolID, p.target}); !seen[k] {
				seen[k] = true
				ps = append(ps, p)
			}
		}
	}
	g.settle(ps)
}

type postedKey struct {
	spoolID int64
	target  string
}

// settleAll settles every posted delivery.
func (g *Gateway) settleAll() {
	ps, err := g.spool.postedAll(g.ctx)
	if err != nil {
		if g.ctx.Err() == nil {
			g.log.Error("read posted deliveries", "err", err)
		}
		return
	}
	g.settle(ps)
}

// settle asks the outbox about posted deliveries' items: all sent makes one delivered (those
// are recorded in one transaction), one failed for good sends it back to be posted again.
// While any is pending it stays as it is.
func (g *Gateway) settle(ps []postedDelivery) {
	// One question for all items first: with a backlog, thousands of posted deliveries wait
	// for the outbox, and asking about each (below) made every sweep and every outcome cost
	// as much as the backlog.
	var ids []int64
	for _, p := range ps {
		ids = append(ids, p.items...)
	}
	unsent, err := g.client.Unsent(g.ctx, ids)
	if err != nil {
		if g.ctx.Err() == nil {
			g.log.Warn("read the outbox state of posted deliveries", "count", len(ps), "err", err)
		}
		return // the next sweep asks again
	}
	var done []postedDelivery
	for _, p := range ps {
		if g.ctx.Err() != nil {
			return
		}
		if slices.ContainsFunc(p.items, func(id int64) bool { return unsent[id] }) {
			continue // its outcome is reported when it comes
		}
		failed, pending := g.outboxState(p)
		switch {
		case pending:
		case failed == nil:
			done = append(done, p)
		default:
			g.repost(p, failed)
		}
	}
	if len(done) == 0 {
		return
	}
	confirmed, err := g.spool.confirm(g.ctx, done)
	if err != nil {
		if g.ctx.Err() == nil {
			g.log.Error("mark deliveries delivered", "count", len(done), "err", err)
		}
		return // the next sweep confirms them
	}
	for _, p := range confirmed {
		g.log.Info("mail delivered", "spool_id", p.spoolID, "target", p.target, "outbox_id", p.items[0])
	}
	if len(confirmed) > 0 {
		g.announceDelivered()
		targets := make([]string, 0, len(confirmed))
		for _, p := range confirmed {
			targets = append(targets, p.target)
		}
		g.roomsFreed(g.ctx, targets) // a full room may take more now (claim.go)
	}
}

// outboxState reports whether one of p's items failed for good (or was dropped by an
// operator), and whether one is pending (or its state cannot be read now).
func (g *Gateway) outboxState(p postedDelivery) (failed error, pending bool) {
	for _, item := range p.items {
		_, done, err := g.client.PendingItem(item).Sent(g.ctx)
		var se *matrix.SendError
		switch {
		case !done:
			return nil, true // its outcome is reported when it comes
		case errors.As(err, &se), errors.Is(err, matrix.ErrNoItem):
			failed = err
		case err != nil:
			if g.ctx.Err() == nil {
				g.log.Warn("read the outbox state of a delivery", "spool_id", p.spoolID, "target", p.target, "err", err)
			}
			return nil, true // the next sweep asks again
		}
	}
	return failed, false
}

// repost sends a posted delivery whose post failed back to be posted again with backoff, or to
// the dead letters after Options.DeadLetterAfter.
func (g *Gateway) repost(p postedDelivery, failed error) {
	if time.Since(p.receivedAt) >= g.opts.DeadLetterAfter {
		g.log.Error("mail delivery failed for too long; dead-lettered until retried", "spool_id", p.spoolID, "target", p.target, "attempts", p.attempts+1, "err", failed)
		if err := g.spool.unpost(g.ctx, p, stateDead, time.Time{}, failed.Error()); err != nil && g.ctx.Err() == nil {
			g.log.Error("dead-letter delivery", "spool_id", p.spoolID, "err", err)
		}
		return
	}
	wait := backoff.Delay(p.attempts+1, g.opts.MinRetryDelay, g.opts.MaxRetryDelay)
	g.log.Warn("the outbox failed a mail's post; will post again", "spool_id", p.spoolID, "target", p.target, "attempt", p.attempts+1, "retry_in", wait, "err", failed)
	if err := g.spool.unpost(g.ctx, p, 0, time.Now().Add(wait), failed.Error()); err != nil && g.ctx.Err() == nil {
		g.log.Error("reschedule delivery", "spool_id", p.spoolID, "err", err)
	}
	g.kick()
}

// requeueFailed makes the outbox send again those of a delivery's items it failed for good
// before (a post found by its idempotency key returns the failed item as it is).
func (g *Gateway) requeueFailed(ctx context.Context, items []int64) error {
	for _, item := range items {
		_, done, err := g.client.PendingItem(item).Sent(ctx)
		var se *matrix.SendError
		if !done || !errors.As(err, &se) {
			continue
		}
		if err := g.client.Requeue(ctx, item); err != nil && !errors.Is(err, matrix.ErrNoItem) {
			return fmt.Errorf("post again: %w", err)
		}
	}
	return nil
}

// finishPost records that delivery d is in the outbox as items (the post first), with what
// also runs in that transaction (nil: nothing); with no items (the mail was posted before, by
// another delivery) it is delivered. Items of the mail that the outbox failed for good before
// (found again by their idempotency key) are sent again. Once its transaction has committed,
// afterPosted tells the confirmer.
func (g *Gateway) finishPost(ctx context.Context, d delivery, items []int64, also func(context.Context) error) error {
	if err := g.requeueFailed(ctx, items); err != nil {
		return err
	}
	if len(items) == 0 {
		return g.spool.delivered(ctx, d, 0)
	}
	return g.spool.posted(ctx, d, items, also)
}

// afterPosted has the confirmer look at a delivery posted as items at once: they may be sent
// (or failed) already, before the delivery was recorded as posted. With no items it was
// delivered.
func (g *Gateway) afterPosted(items []int64) {
	if len(items) == 0 {
		g.announceDelivered()
		return
	}
	g.onOutcome(matrix.Outcome{ID: items[0]})
}

// atomically runs fn in one transaction of the client's database when the spool is in it
// (matrix.Client.InTransaction: the outbox items stored in fn are sent once it commits), and
// as it is otherwise, each store in a transaction of its own.
func (g *Gateway) atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	if g.spool.db.RawDB != g.client.Database().RawDB {
		return fn(ctx)
	}
	return g.client.InTransaction(ctx, fn)
}

// posted records delivery d as posted into the outbox as items, and runs also (unless nil) in
// the same transaction.
func (s *spool) posted(ctx context.Context, d delivery, items []int64, also func(context.Context) error) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if also != nil {
			if err := also(ctx); err != nil {
				return err
			}
		}
		if _, err := s.q.Exec(ctx, `DELETE FROM samtal_mail_delivery_item WHERE spool_id = $1 AND target = $2`, d.spoolID, d.target); err != nil {
			return err
		}
		for _, it := range items {
			if _, err := s.q.Exec(ctx, `INSERT INTO samtal_mail_delivery_item (spool_id, target, outbox_id) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, d.spoolID, d.target, it); err != nil {
				return err
			}
		}
		_, err := s.q.Exec(ctx, `UPDATE samtal_mail_delivery SET state = $1, outbox_id = $2, claimed_by = '', claimed_until = 0
			WHERE spool_id = $3 AND target = $4`, statePosted, items[0], d.spoolID, d.target)
		return err
	})
	if err != nil {
		return fmt.Errorf("mailbridge: mark mail %d posted to %s: %w", d.spoolID, d.target, err)
	}
	return nil
}

// confirm marks posted deliveries delivered, in one transaction, and returns those that were
// still posted (another instance may have confirmed one first).
func (s *spool) confirm(ctx context.Context, ps []postedDelivery) ([]postedDelivery, error) {
	var out []postedDelivery
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		out = out[:0]
		for _, p := range ps {
			res, err := s.q.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 1, last_error = '' WHERE spool_id = $1 AND target = $2 AND state = $3`,
				p.spoolID, p.target, statePosted)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailbridge: mark %d mails delivered: %w", len(ps), err)
	}
	for range out {
		s.metrics.Delivery(OutcomeDelivered)
	}
	return out, nil
}

// unpost sends a posted delivery whose post failed back to state (0: pending, due at next;
// stateDead), counting the attempt. reason must not contain message content.
func (s *spool) unpost(ctx context.Context, p postedDelivery, state int, next time.Time, reason string) error {
	res, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = $1, attempts = attempts + 1, next_attempt = $2, last_error = $3
		WHERE spool_id = $4 AND target = $5 AND state = $6`,
		state, next.UnixMilli(), reason, p.spoolID, p.target, statePosted)
	if err != nil {
		return fmt.Errorf("mailbridge: reschedule mail %d for %s: %w", p.spoolID, p.target, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if state == stateDead {
			s.metrics.Delivery(OutcomeDead)
		} else {
			s.metrics.Delivery(OutcomeRetry)
		}
	}
	return nil
}

const selectPosted = `SELECT d.spool_id, d.target, d.attempts, m.received_at, i.outbox_id
	FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id
	JOIN samtal_mail_delivery_item i ON i.spool_id = d.spool_id AND i.target = d.target
	WHERE d.state = 3`

// postedAll returns every posted delivery.
func (s *spool) postedAll(ctx context.Context) ([]postedDelivery, error) {
	return scanPosted(s.db.Query(ctx, selectPosted+` ORDER BY d.spool_id, d.target, i.outbox_id`))
}

// postedWithChunk is how many outbox items one postedWith query asks about at most.
const postedWithChunk = 64

// postedWith returns the posted deliveries that outbox items ids belong to, each once, in the
// order of the spool. The query starts from the items (by their index), not from every posted
// delivery: it runs for every batch of outcomes, and a backlog has thousands of them. The
// unary plus keeps SQLite's planner, which has no statistics, from starting at the state index
// instead.
func (s *spool) postedWith(ctx context.Context, ids ...int64) ([]postedDelivery, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return scanPosted(s.q.Query(ctx, postedWithQuery(len(ids)), args...))
}

// postedWithQuery is postedWith's query for n items.
func postedWithQuery(n int) string {
	in := make([]string, n)
	for i := range in {
		in[i] = "$" + strconv.Itoa(i+1)
	}
	return `SELECT DISTINCT d.spool_id, d.target, d.attempts, m.received_at, i.outbox_id
		FROM samtal_mail_delivery_item w
		JOIN samtal_mail_delivery d ON d.spool_id = w.spool_id AND d.target = w.target
		JOIN samtal_mail_spool m ON m.id = d.spool_id
		JOIN samtal_mail_delivery_item i ON i.spool_id = d.spool_id AND i.target = d.target
		WHERE w.outbox_id IN (` + strings.Join(in, ", ") + `) AND +d.state = 3
		ORDER BY d.spool_id, d.target, i.outbox_id`
}

func scanPosted(rows dbutil.Rows, err error) ([]postedDelivery, error) {
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	defer rows.Close()
	var out []postedDelivery
	for rows.Next() {
		var p postedDelivery
		var received, item int64
		if err := rows.Scan(&p.spoolID, &p.target, &p.attempts, &received, &item); err != nil {
			return nil, fmt.Errorf("mailbridge: read spool: %w", err)
		}
		if n := len(out); n > 0 && out[n-1].spoolID == p.spoolID && out[n-1].target == p.target {
			out[n-1].items = append(out[n-1].items, item)
			continue
		}
		p.receivedAt, p.items = time.UnixMilli(received), []int64{item}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	return out, nil
}
