package mailbridge

import (
	"context"
	"errors"
	"fmt"
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
		drain:
			for len(ids) < deliveryBatch*8 {
				select {
				case id := <-g.outcomes:
					ids[id] = true
				default:
					break drain
				}
			}
			for id := range ids {
				g.settleItem(id)
			}
		case <-tick.C:
			g.settleAll()
		}
		if g.lostOutcome.Swap(false) {
			g.settleAll()
		}
	}
}

// settleItem settles the posted delivery that outbox item id belongs to, if any.
func (g *Gateway) settleItem(id int64) {
	ps, err := g.spool.postedWith(g.ctx, id)
	if err != nil {
		if g.ctx.Err() == nil {
			g.log.Error("read posted deliveries", "err", err)
		}
		return
	}
	for _, p := range ps {
		g.settle(p)
	}
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
	for _, p := range ps {
		if g.ctx.Err() != nil {
			return
		}
		g.settle(p)
	}
}

// settle asks the outbox about a posted delivery's items: all sent makes it delivered, one
// failed for good sends it back to be posted again. While any is pending it stays as it is.
func (g *Gateway) settle(p postedDelivery) {
	var failed error
	for _, item := range p.items {
		_, done, err := g.client.PendingItem(item).Sent(g.ctx)
		var se *matrix.SendError
		switch {
		case !done:
			return // still pending; its outcome is reported when it comes
		case errors.As(err, &se), errors.Is(err, matrix.ErrNoItem): // failed, or dropped by an operator
			failed = err
		case err != nil:
			if g.ctx.Err() == nil {
				g.log.Warn("read the outbox state of a delivery", "spool_id", p.spoolID, "target", p.target, "err", err)
			}
			return // the next sweep asks again
		}
	}
	if failed == nil {
		ok, err := g.spool.confirm(g.ctx, p)
		if err != nil && g.ctx.Err() == nil {
			g.log.Error("mark delivery delivered", "spool_id", p.spoolID, "target", p.target, "err", err)
		}
		if ok {
			g.announceDelivered()
			g.log.Info("mail delivered", "spool_id", p.spoolID, "target", p.target, "outbox_id", p.items[0])
		}
		return
	}
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

// markPosted records that delivery d is in the outbox as items (the post first), and has the
// confirmer look at it at once: its items may be sent (or failed) already. With no items (the
// mail was posted before, by another delivery) it is delivered.
func (g *Gateway) markPosted(ctx context.Context, d delivery, items []int64) error {
	if len(items) == 0 {
		if err := g.spool.delivered(ctx, d, 0); err != nil {
			return err
		}
		g.announceDelivered()
		return nil
	}
	if err := g.spool.posted(ctx, d, items); err != nil {
		return err
	}
	g.onOutcome(matrix.Outcome{ID: items[0]})
	return nil
}

// posted records delivery d as posted into the outbox as items.
func (s *spool) posted(ctx context.Context, d delivery, items []int64) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := s.db.Exec(ctx, `DELETE FROM samtal_mail_delivery_item WHERE spool_id = $1 AND target = $2`, d.spoolID, d.target); err != nil {
			return err
		}
		for _, it := range items {
			if _, err := s.db.Exec(ctx, `INSERT INTO samtal_mail_delivery_item (spool_id, target, outbox_id) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, d.spoolID, d.target, it); err != nil {
				return err
			}
		}
		_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = $1, outbox_id = $2, claimed_by = '', claimed_until = 0
			WHERE spool_id = $3 AND target = $4`, statePosted, items[0], d.spoolID, d.target)
		return err
	})
	if err != nil {
		return fmt.Errorf("mailbridge: mark mail %d posted to %s: %w", d.spoolID, d.target, err)
	}
	return nil
}

// confirm marks a posted delivery delivered, and reports whether it was still posted (another
// instance may have confirmed it first).
func (s *spool) confirm(ctx context.Context, p postedDelivery) (bool, error) {
	res, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 1, last_error = '' WHERE spool_id = $1 AND target = $2 AND state = $3`,
		p.spoolID, p.target, statePosted)
	if err != nil {
		return false, fmt.Errorf("mailbridge: mark mail %d delivered to %s: %w", p.spoolID, p.target, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	s.metrics.Delivery(OutcomeDelivered)
	return true, nil
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

// postedWith returns the posted deliveries that outbox item id belongs to.
func (s *spool) postedWith(ctx context.Context, id int64) ([]postedDelivery, error) {
	return scanPosted(s.db.Query(ctx, selectPosted+` AND EXISTS (SELECT 1 FROM samtal_mail_delivery_item w
		WHERE w.outbox_id = $1 AND w.spool_id = d.spool_id AND w.target = d.target)
		ORDER BY d.spool_id, d.target, i.outbox_id`, id))
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
