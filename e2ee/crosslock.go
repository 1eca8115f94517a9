package e2ee

import (
	"context"
	"sync"
	"sync/atomic"
)

// ctxMutex is a mutex whose lock gives up when a context ends (e2ee flakes and stop part).
// Machine.crossMu is one: Bootstrap, Recover and Status hold it across requests to the
// homeserver, and a Syncer's ProcessSync waits for it; a Syncer told to stop must not wait
// for a Status stuck on a slow homeserver. The zero value is unlocked.
type ctxMutex struct {
	once    sync.Once
	ch      chan struct{} // holds a token while locked
	waiting atomic.Int32  // callers in lock, not yet through (for tests)
}

// lock locks mu, or returns ctx's error when ctx ends first.
func (mu *ctxMutex) lock(ctx context.Context) error {
	mu.once.Do(func() { mu.ch = make(chan struct{}, 1) })
	mu.waiting.Add(1)
	defer mu.waiting.Add(-1)
	select {
	case mu.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// unlock unlocks mu, which must be locked.
func (mu *ctxMutex) unlock() { <-mu.ch }
