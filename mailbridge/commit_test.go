package mailbridge

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// openTestSpool opens a spool on a fresh SQLite file or PostgreSQL database.
func openTestSpool(t testing.TB, dialect string) (*spool, *dbutil.Database) {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "spool.db")
	if dialect == "postgres" {
		dsn = pgtest.New(t)
	}
	db, err := matrix.OpenDatabase(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := openSpool(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// TestGroupCommit: mails stored at the same time from many goroutines each get their own spool
// ID, under which exactly their own bytes and envelope are stored, however they were batched.
func TestGroupCommit(t *testing.T) {
	s, _ := openTestSpool(t, "sqlite")
	const n = 200
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			raw := fmt.Appendf(nil, "Subject: mail %d\r\n\r\nbody %d\r\n", i, i)
			id, err := s.store(t.Context(), fmt.Sprintf("s%d@x.example", i), raw, []target{{room: "!r:hs", recipient: "a@x"}})
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("spool ID %d given twice", id)
		}
		seen[id] = true
	}
	due, err := s.due(t.Context(), time.Now(), n+1)
	if err != nil || len(due) != n {
		t.Fatalf("due = %d, %v; want %d", len(due), err, n)
	}
	byID := map[int64]delivery{}
	for _, d := range due {
		byID[d.spoolID] = d
	}
	for i, id := range ids {
		d := byID[id]
		if want := fmt.Appendf(nil, "Subject: mail %d\r\n\r\nbody %d\r\n", i, i); !bytes.Equal(d.message, want) || d.mailFrom != fmt.Sprintf("s%d@x.example", i) {
			t.Errorf("mail %d stored under %d as %q from %s", i, id, d.message, d.mailFrom)
		}
	}
	commits, mails := s.commit.stats()
	t.Logf("%d mails in %d commits", mails, commits)
}

// TestGroupCommitFails: when the transaction of a batch fails, every mail in it fails, none of
// them is stored, and the next mails commit again. The failure is injected with a trigger in
// the real database that refuses inserts while a flag row exists.
func TestGroupCommitFails(t *testing.T) {
	s, db := openTestSpool(t, "sqlite")
	ctx := t.Context()
	for _, q := range []string{
		`CREATE TABLE fault (on_ INTEGER)`,
		`CREATE TRIGGER fault_spool BEFORE INSERT ON samtal_mail_spool WHEN EXISTS (SELECT 1 FROM fault) BEGIN SELECT RAISE(ABORT, 'injected fault'); END`,
		`INSERT INTO fault VALUES (1)`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := s.store(ctx, "a@x.example", fmt.Appendf(nil, "Subject: %d\r\n\r\nx\r\n", i), []target{{room: "!r:hs", recipient: "a@x"}}); err == nil {
				t.Error("store succeeded while the database refuses")
			}
		})
	}
	wg.Wait()
	if due, err := s.due(ctx, time.Now(), 100); err != nil || len(due) != 0 {
		t.Fatalf("due after failed batches = %d, %v; want none", len(due), err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM fault`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store(ctx, "a@x.example", []byte("Subject: ok\r\n\r\nx\r\n"), []target{{room: "!r:hs", recipient: "a@x"}}); err != nil {
		t.Fatalf("store after the fault: %v", err)
	}
}

// TestClaims: on PostgreSQL two instances claiming at the same time never get the same
// delivery; a claim holds for the lease and is free to take when it ran out; a delivery done
// or rescheduled is free at its time.
func TestClaims(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	a, db := openTestSpool(t, "postgres")
	b, err := openSpool(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	if !a.claims.postgres || a.claims.holder == b.claims.holder {
		t.Fatalf("claims: %+v and %+v", a.claims, b.claims)
	}
	const n = 60
	for i := range n {
		if _, err := a.store(t.Context(), "a@x", fmt.Appendf(nil, "Subject: %d\r\n\r\nx\r\n", i), []target{{room: "!r:hs", recipient: "r@x"}}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int64]string{}
	for _, s := range []*spool{a, b, a, b} {
		wg.Go(func() {
			due, err := s.claim(t.Context(), now, 20)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, d := range due {
				if h, ok := got[d.spoolID]; ok {
					t.Errorf("mail %d claimed by %s and %s", d.spoolID, h, s.claims.holder)
				}
				got[d.spoolID] = s.claims.holder
			}
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d mails claimed, want %d", len(got), n)
	}
	if due, err := b.claim(t.Context(), now.Add(time.Second), n); err != nil || len(due) != 0 {
		t.Fatalf("claimed again within the lease: %d, %v", len(due), err)
	}
	next, ok, err := b.nextAttempt(t.Context())
	if err != nil || !ok || next.Before(now.Add(b.claims.lease-time.Second)) {
		t.Errorf("nextAttempt for the other instance = %v, %v, %v; want when the lease runs out", next, ok, err)
	}
	due, err := b.claim(t.Context(), now.Add(a.claims.lease+time.Second), n)
	if err != nil || len(due) != n {
		t.Fatalf("after the lease ran out: %d claimed, %v; want %d", len(due), err, n)
	}
	if err := b.retryLater(t.Context(), due[0], now, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.delivered(t.Context(), due[1], 1); err != nil {
		t.Fatal(err)
	}
	again, err := a.claim(t.Context(), now.Add(a.claims.lease+2*time.Second), n)
	if err != nil || len(again) != 1 || again[0].spoolID != due[0].spoolID {
		t.Fatalf("rescheduled delivery: claimed %d, %v; want only mail %d", len(again), err, due[0].spoolID)
	}
}

// BenchmarkSpoolCommit is the spool's own ceiling: durable commits of the same mails the
// gateway benchmark sends, without SMTP, one at a time (serial: one fsync per mail) and from
// many goroutines (group commit). Run on SQLite, the default.
//
//	go test -tags goolm -run '^$' -bench BenchmarkSpoolCommit -benchtime 10s ./mailbridge/
func BenchmarkSpoolCommit(b *testing.B) {
	raw := benchMail()
	targets := []target{{room: "!bench:hs", recipient: "bench@agency.example"}}
	for _, par := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", par), func(b *testing.B) {
			s, _ := openTestSpool(b, "sqlite")
			b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0)))
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			if par == 1 {
				for b.Loop() {
					if _, err := s.store(b.Context(), "load@agency.example", raw, targets); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.store(b.Context(), "load@agency.example", raw, targets); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			commits, mails := s.commit.stats()
			if commits > 0 {
				b.ReportMetric(float64(mails)/float64(commits), "mails/commit")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
		})
	}
}

// benchMail is a mail like those of the load tool: about 1.5 KB of plain text.
func benchMail() []byte {
	var b bytes.Buffer
	b.WriteString("From: Case system <load@agency.example>\r\nTo: bench@agency.example\r\nSubject: Case 4711 updated\r\nMessage-ID: <bench@agency.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for b.Len() < 1500 {
		b.WriteString("The decision in case 4711 was made today; see the case file for details.\r\n")
	}
	return b.Bytes()
}
