package storage

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestOpenSQLiteAtOnce: several pools (as several gateway instances, or a CLI beside the
// daemon) open one new SQLite file at the same moment, each turning it to WAL. Each open
// succeeds. SQLite answers SQLITE_BUSY at once, without waiting the busy timeout, to one of two
// connections that would deadlock on the file's lock; before, that came back from Open as
// "database is locked" (seen in CI as TestSchemaUpgradeRace/sqlite, at a high load).
func TestOpenSQLiteAtOnce(t *testing.T) {
	const rounds, pools = 30, 8
	for round := range rounds {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("race-%d.db", round))
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, pools)
		for i := range pools {
			wg.Go(func() {
				<-start
				db, err := Open(t.Context(), path)
				if err != nil {
					errs <- fmt.Errorf("round %d, pool %d: %w", round, i, err)
					return
				}
				defer db.Close()
				// A write, which takes the file's write lock too.
				if _, err := db.Exec(t.Context(), fmt.Sprintf(`CREATE TABLE IF NOT EXISTS t%d (x INTEGER)`, i)); err != nil {
					errs <- fmt.Errorf("round %d, pool %d: write: %w", round, i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
	}
}
