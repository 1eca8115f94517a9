// Package backoff is how samtal waits before trying again: capped exponential backoff with
// jitter, or exactly what the server asked for.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait before try number attempt+1 after attempt failures in a row: min doubled
// per failure, capped at max, with equal jitter (at least half of it, so retries never come
// back-to-back, and clients that lost the same server do not all return at once).
func Delay(attempt int, min, max time.Duration) time.Duration {
	d := min << (clamp(attempt-1, 0, 20))
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Server is the wait a server asked for (retry_after_ms, Retry-After), with up to a tenth added
// so that parallel workers told the same do not return at the same instant.
func Server(asked time.Duration) time.Duration {
	return asked + time.Duration(rand.Int64N(int64(asked/10)+1))
}

// Sleep waits for d and reports true, or false as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func clamp(v, lo, hi int) int {
	return max(lo, min(v, hi))
}
