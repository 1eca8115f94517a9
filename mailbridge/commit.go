package mailbridge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

// Group commit: every SMTP connection that ends a DATA waits for its mail to be on disk before
// it answers 250, and one fsync per mail would make the disk's sync rate the gateway's accept
// rate. Instead the waiting mails are queued, and one committer goroutine writes all that are
// queued in one transaction, so that many connections share one fsync. Each waiter gets its
// own spool ID; when the transaction fails, every mail in it fails, and each waiter answers
// 451 4.3.0 (nothing of the batch is stored, so nothing is half accepted).

// maxCommitBatch and maxCommitBytes bound one group commit, so that a burst of large mails
// does not make one transaction huge.
const (
	maxCommitBatch = 256
	maxCommitBytes = 64 << 20
)

// commitReq is one mail waiting to be committed.
type commitReq struct {
	mailFrom string
	message  []byte
	targets  []target
	imap     *imapCommit       // for a mail from IMAP, what is committed with it; else nil
	done     chan commitResult // buffered: the committer never blocks on a waiter that left
}

type commitResult struct {
	id  int64
	err error
}

// committer batches the mails waiting to be stored into shared transactions. Its goroutine
// runs only while mail waits: the first mail queued starts it, and it ends when the queue is
// empty, so there is nothing to stop.
type committer struct {
	db *dbutil.Database
	q  *storage.Statements // db's, prepared

	mu      sync.Mutex
	queue   []*commitReq
	running bool

	// commits and mails count transactions and mails committed, for tests and benchmarks:
	// mails/commits is the mean batch.
	commits, mails int64
}

// submit queues the mail and waits until it is committed, or its batch failed. ctx bounds only
// the wait: a mail already queued is committed or not as the database decides, so callers that
// must know the outcome (DATA) pass a context that does not end.
func (c *committer) submit(ctx context.Context, mailFrom string, message []byte, targets []target) (int64, error) {
	return c.submitReq(ctx, &commitReq{mailFrom: mailFrom, message: message, targets: targets})
}

// submitReq queues r and waits, as submit does.
func (c *committer) submitReq(ctx context.Context, r *commitReq) (int64, error) {
	r.done = make(chan commitResult, 1)
	c.mu.Lock()
	c.queue = append(c.queue, r)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case res := <-r.done:
		return res.id, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run commits batches until the queue is empty.
func (c *committer) run() {
	for {
		c.mu.Lock()
		n, size := 0, 0
		for n < len(c.queue) && n < maxCommitBatch && (n == 0 || size+len(c.queue[n].message) <= maxCommitBytes) {
			size += len(c.queue[n].message)
			n++
		}
		if n == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		batch := c.queue[:n:n]
		c.queue = append([]*commitReq(nil), c.queue[n:]...)
		c.mu.Unlock()

		ids, err := c.commit(batch)
		c.mu.Lock()
		if err == nil {
			c.commits++
			c.mails += int64(len(batch))
		}
		c.mu.Unlock()
		for i, r := range batch {
			if err != nil {
				r.done <- commitResult{err: err}
			} else {
				r.done <- commitResult{id: ids[i]}
			}
		}
	}
}

// commit stores every mail of batch, with its deliveries, in one transaction. The transaction
// does not end with any caller's context: it is decided by the database.
func (c *committer) commit(batch []*commitReq) ([]int64, error) {
	ids := make([]int64, len(batch))
	now := time.Now().UnixMilli()
	err := c.db.DoTxn(context.Background(), nil, func(ctx context.Context) error {
		for i, r := range batch {
			if r.imap != nil && len(r.targets) == 0 {
				// An IMAP mail no route takes: only the checkpoint moves.
				if err := r.imap.commit(ctx, c.db, 0); err != nil {
					return err
				}
				continue
			}
			err := c.q.QueryRow(ctx, `INSERT INTO samtal_mail_spool (received_at, mail_from, message) VALUES ($1, $2, $3) RETURNING id`,
				now, r.mailFrom, r.message).Scan(&ids[i])
			if err != nil {
				return err
			}
			for _, t := range r.targets {
				state := 0
				if t.refused != "" {
					state = stateDead // refused before it was ever tried (imap_sender.go)
				}
				_, err := c.q.Exec(ctx, `INSERT INTO samtal_mail_delivery (spool_id, target, recipient, create_spec, state, last_error, recheck) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
					ids[i], t.room, t.recipient, t.createSpec, state, t.refused, t.recheck)
				if err != nil {
					return err
				}
			}
			if r.imap != nil {
				if err := r.imap.commit(ctx, c.db, ids[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailbridge: spool %d mails: %w", len(batch), err)
	}
	return ids, nil
}

// stats returns how many transactions and mails were committed.
func (c *committer) stats() (commits, mails int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commits, c.mails
}
