package matrix

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// unsentChunk bounds the IDs asked about in one query (SQLite allows 32766 parameters).
const unsentChunk = 500

// Unsent returns those of the items ids of this client's outbox that are still pending: not
// sent and not failed for good. It asks the database once per 500 items, where Pending.Sent
// asks once per item, for a program that keeps track of many items at once (a mail gateway
// with a backlog). IDs that are no items of this session are not in the result.
func (c *Client) Unsent(ctx context.Context, ids []int64) (map[int64]bool, error) {
	o := c.outbox
	out := make(map[int64]bool)
	for start := 0; start < len(ids); start += unsentChunk {
		chunk := ids[start:min(start+unsentChunk, len(ids))]
		var q strings.Builder
		// By ID alone, which is the primary key: with the session and state in the query,
		// SQLite's planner (no statistics) walks every pending item of the session instead.
		q.WriteString(`SELECT id, session, state FROM samtal_outbox WHERE id IN (`)
		args := make([]any, 0, len(chunk))
		for i, id := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("$" + strconv.Itoa(i+1))
			args = append(args, id)
		}
		q.WriteByte(')')
		rows, err := o.db.Query(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("matrix: outbox: %w", err)
		}
		for rows.Next() {
			var id int64
			var session string
			var state int
			if err := rows.Scan(&id, &session, &state); err != nil {
				rows.Close()
				return nil, fmt.Errorf("matrix: outbox: %w", err)
			}
			if session == o.c.name && state == statePending {
				out[id] = true
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("matrix: outbox: %w", err)
		}
	}
	// Sent or failed items whose marks are not written yet are still pending in the
	// database; the outbox knows better.
	o.mu.Lock()
	for id := range out {
		if _, done := o.results[id]; done {
			delete(out, id)
		}
	}
	o.mu.Unlock()
	return out, nil
}
