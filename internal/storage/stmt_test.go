package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/pgtest"
)

// TestStatements: prepared statements run outside and inside a transaction of the context (a
// rollback takes back what they wrote there; on SQLite a statement outside the transaction
// would wait for its write lock instead), from many goroutines at once, with $N parameters in
// any order, and after Close unprepared. On SQLite each query is prepared once.
func TestStatements(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "stmt.db")
			if dialect == "postgres" {
				if testing.Short() {
					t.Skip("starts PostgreSQL")
				}
				dsn = pgtest.New(t)
			}
			db, err := Open(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := t.Context()
			if _, err := db.Exec(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			st := NewStatements(db)
			const insert = `INSERT INTO kv (v, k) VALUES ($2, $1)`
			const get = `SELECT v FROM kv WHERE k = $1`
			if _, err := st.Exec(ctx, insert, "a", 1); err != nil {
				t.Fatal(err)
			}
			var v int64
			if err := st.QueryRow(ctx, get, "a").Scan(&v); err != nil || v != 1 {
				t.Fatalf("QueryRow = %d, %v; want 1", v, err)
			}

			rollback := errors.New("roll back")
			err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
				if _, err := st.Exec(ctx, insert, "b", 2); err != nil {
					return err
				}
				if err := st.QueryRow(ctx, get, "b").Scan(&v); err != nil || v != 2 {
					return fmt.Errorf("in the transaction: %d, %v; want 2", v, err)
				}
				return rollback
			})
			if !errors.Is(err, rollback) {
				t.Fatal(err)
			}
			if err := st.QueryRow(ctx, get, "b").Scan(&v); err == nil {
				t.Fatalf("a row written in a rolled back transaction is there (%d)", v)
			}

			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Go(func() {
					for i := range 25 {
						k := fmt.Sprintf("g%d-%d", g, i)
						if _, err := st.Exec(ctx, insert, k, int64(i)); err != nil {
							errs <- err
							return
						}
						var got int64
						if err := st.QueryRow(ctx, get, k).Scan(&got); err != nil || got != int64(i) {
							errs <- fmt.Errorf("%s = %d, %v", k, got, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			rows, err := st.Query(ctx, `SELECT COUNT(*) FROM kv WHERE v >= $1`, 0)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				if err := rows.Scan(&n); err != nil {
					t.Fatal(err)
				}
			}
			rows.Close()
			if n != 1+8*25 {
				t.Fatalf("%d rows, want %d", n, 1+8*25)
			}
			if prepared := len(st.stmts); dialect == "sqlite" && prepared != 3 || dialect == "postgres" && prepared != 0 {
				t.Errorf("%d statements prepared for three queries", prepared)
			}

			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Exec(ctx, insert, "c", 3); err != nil {
				t.Fatalf("after Close: %v", err)
			}
			if db.Dialect == dbutil.SQLite && len(st.stmts) != 0 {
				t.Errorf("a statement was prepared after Close")
			}
		})
	}
}

// BenchmarkStatements: the spool's insert of a mail, run as it is (compiled each time) and as
// a prepared statement, in transactions of 32 inserts (a group commit).
//
//	go test -run '^$' -bench BenchmarkStatements -count 6 ./internal/storage/ | tee s.txt; benchstat -col /run s.txt
func BenchmarkStatements(b *testing.B) {
	for _, run := range []string{"unprepared", "prepared"} {
		b.Run("run="+run, func(b *testing.B) {
			db, err := Open(b.Context(), filepath.Join(b.TempDir(), "bench.db")+"?_pragma=synchronous(OFF)")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(b.Context(), `CREATE TABLE spool (id INTEGER PRIMARY KEY, received_at BIGINT NOT NULL, mail_from TEXT NOT NULL, message BLOB NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			st := NewStatements(db)
			defer st.Close()
			const q = `INSERT INTO spool (received_at, mail_from, message) VALUES ($1, $2, $3) RETURNING id`
			msg := make([]byte, 1500)
			for b.Loop() {
				err := db.DoTxn(b.Context(), nil, func(ctx context.Context) error {
					for range 32 {
						var id int64
						var err error
						if run == "prepared" {
							err = st.QueryRow(ctx, q, 1, "a@b.example", msg).Scan(&id)
						} else {
							err = db.QueryRow(ctx, q, 1, "a@b.example", msg).Scan(&id)
						}
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStatementsFirstUseInTransaction: a query used first inside a transaction is prepared on
// the transaction's connection, not on another of the pool: with every other connection held
// (here the pool has one), preparing it for the database waited for a connection that the
// transactions holding them could not give back until this one ended.
func TestStatementsFirstUseInTransaction(t *testing.T) {
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "stmt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.RawDB.SetMaxOpenConns(1)
	if _, err := db.Exec(t.Context(), `CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	st := NewStatements(db)
	defer st.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		_, err := st.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, "a", 1)
		return err
	})
	if err != nil {
		t.Fatalf("first use in a transaction: %v", err)
	}
	var v int64
	if err := st.QueryRow(t.Context(), `SELECT v FROM kv WHERE k = $1`, "a").Scan(&v); err != nil || v != 1 {
		t.Fatalf("after: %d, %v", v, err)
	}
}
