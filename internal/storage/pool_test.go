package storage

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/pgtest"
)

func TestPoolParams(t *testing.T) {
	const base = "postgres://samtal:s3cret@db:5432/samtal?sslmode=disable"
	def := pool{maxConns: DefaultMaxConns, maxIdleTime: DefaultMaxConnIdleTime, maxLifetime: DefaultMaxConnLifetime}
	for _, tc := range []struct {
		dsn  string
		want pool
		conn string // what the driver gets
	}{
		{base, def, base},
		{base + "&pool_max_conns=5", pool{5, DefaultMaxConnIdleTime, DefaultMaxConnLifetime}, base},
		{base + "&pool_max_conn_idle_time=30s&pool_max_conn_lifetime=0&pool_max_conns=50",
			pool{50, 30 * time.Second, 0}, base},
	} {
		conn, got, err := poolParams(tc.dsn)
		if err != nil {
			t.Errorf("%s: %v", tc.dsn, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: pool %+v, want %+v", tc.dsn, got, tc.want)
		}
		// Only the order of the query may change.
		if strings.Contains(conn, "pool_") || !strings.Contains(conn, "sslmode=disable") || !strings.HasPrefix(conn, "postgres://samtal:s3cret@db:5432/samtal?") {
			t.Errorf("%s: the driver gets %s, want %s", tc.dsn, conn, tc.conn)
		}
	}
	for _, bad := range []string{"pool_max_conns=0", "pool_max_conns=lots", "pool_max_conns=1001", "pool_max_conns=",
		"pool_max_conn_idle_time=5", "pool_max_conn_lifetime=-1s"} {
		_, err := Open(t.Context(), base+"&"+bad)
		if !errors.Is(err, ErrInvalidDSN) {
			t.Errorf("%s: %v, want ErrInvalidDSN", bad, err)
			continue
		}
		name, _, _ := strings.Cut(bad, "=")
		if !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error %q should name the parameter and not the password", bad, err)
		}
	}
}

// TestPostgresPoolLimit: a burst of 100 concurrent queries, each holding its connection until
// all are under way, reaches the server on no more connections than the pool allows (20 by
// default, or pool_max_conns); the rest wait in the pool, and all succeed. Before, each query
// opened a connection of its own, and past the test server's max_connections (50) they failed
// with "sorry, too many clients already".
func TestPostgresPoolLimit(t *testing.T) {
	dsn := pgtest.New(t)
	for _, tc := range []struct {
		name   string
		params string
		want   int
	}{
		{"default", "", DefaultMaxConns},
		{"pool_max_conns", "&pool_max_conns=3", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := "burst_" + tc.name
			burst(t, dsn, dsn+"&application_name="+app+tc.params, app, tc.want)
		})
	}
}

// burst runs 100 queries at once through Open(dsn), all blocked on an advisory lock that the
// test holds until every query is either on the server or waiting for a connection, and
// checks that want connections (named app) are open then.
func burst(t *testing.T, adminDSN, dsn, app string, want int) {
	const workers = 100
	ctx := t.Context()
	admin, err := sql.Open("postgres", adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	gate, err := admin.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	if _, err := gate.ExecContext(ctx, `SELECT pg_advisory_lock(4711)`); err != nil {
		t.Fatal(err)
	}
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			if _, err := gate.ExecContext(context.Background(), `SELECT pg_advisory_unlock(4711)`); err != nil {
				t.Error(err)
			}
		}
	}
	defer unlock()

	db, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(4711)`); err != nil {
				errs <- err
			}
		}()
	}

	// Every query is on the server (waiting for the lock) or waiting in the pool.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var onServer int
		if err := admin.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&onServer); err != nil {
			t.Fatal(err)
		}
		s := db.RawDB.Stats()
		if s.InUse+int(s.WaitCount) == workers && onServer == s.OpenConnections {
			if onServer != want || s.MaxOpenConnections != want {
				t.Errorf("%d connections on the server (pool limit %d), want %d", onServer, s.MaxOpenConnections, want)
			}
			break
		}
		select {
		case err := <-errs:
			t.Fatalf("a query of the burst failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the burst did not settle: %d connections on the server, pool %+v", onServer, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a query of the burst failed: %v", err)
	}
}
