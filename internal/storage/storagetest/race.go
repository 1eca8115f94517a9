// Package storagetest checks that a package's schema upgrade is safe when several instances
// start on one fresh database at the same moment: goroutines with pools of their own, and
// other processes (the test binary run again), on SQLite and on a real PostgreSQL.
package storagetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/internal/storage"
)

// envChild names the database a child process opens; set only in the processes UpgradeRace
// starts.
const envChild = "SAMTAL_STORAGETEST_CHILD_DSN"

// Goroutines and Processes are how many instances UpgradeRace starts at once.
const (
	Goroutines = 8
	Processes  = 2
)

// UpgradeFunc brings a package's tables in db up to date, as the package does when it opens.
type UpgradeFunc func(ctx context.Context, db *dbutil.Database) error

// Version is a version table and the version it must hold once the upgrade is done (the
// length of its upgrade table).
type Version struct {
	Table string
	Want  int
}

// UpgradeRace runs upgrade at the same moment in Goroutines goroutines, each with a pool of
// its own, and in Processes copies of the test binary, on a fresh SQLite file and on a fresh
// PostgreSQL database (pgtest). Every one must succeed, and each version table must then hold
// one row, at its version. It must be called from the top level of a test function whose name
// is that of the test (the copies run it alone, with -test.run).
func UpgradeRace(t *testing.T, upgrade UpgradeFunc, versions ...Version) {
	t.Helper()
	if dsn := os.Getenv(envChild); dsn != "" {
		child(t, dsn, upgrade)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	test := t.Name()
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "race.db")
			if dialect == "postgres" {
				dsn = pgtest.New(t)
			}
			race(t, exe, test, dsn, upgrade)
			check(t, dsn, versions)
		})
	}
}

// race starts every instance, lets them open their pools, then starts their upgrades together.
func race(t *testing.T, exe, test, dsn string, upgrade UpgradeFunc) {
	t.Helper()
	ctx := t.Context()
	start := make(chan struct{})
	errs := make(chan error, Goroutines+Processes)
	var ready, done sync.WaitGroup
	for i := range Goroutines {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			db, err := storage.Open(ctx, dsn)
			ready.Done()
			if err != nil {
				errs <- fmt.Errorf("instance %d: open: %w", i, err)
				return
			}
			defer db.Close()
			<-start
			if err := upgrade(ctx, db); err != nil {
				errs <- fmt.Errorf("instance %d: %w", i, err)
			}
		}()
	}
	var gos []func()
	for i := range Processes {
		cmd := exec.CommandContext(ctx, exe, "-test.run=^"+test+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), envChild+"="+dsn)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out := bufio.NewReader(stdout)
		line, err := out.ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			rest, _ := io.ReadAll(out)
			_ = cmd.Wait()
			t.Fatalf("process %d did not get ready (%v): %s%s\n%s", i, err, line, rest, stderr.String())
		}
		done.Add(1)
		go func() {
			defer done.Done()
			rest, _ := io.ReadAll(out)
			if err := cmd.Wait(); err != nil {
				errs <- fmt.Errorf("process %d: %v\n%s%s", i, err, rest, stderr.String())
			}
		}()
		gos = append(gos, func() { stdin.Close() })
	}
	ready.Wait()
	close(start)
	for _, g := range gos {
		g()
	}
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// child is a process's part: open, say ready, wait for the go (stdin closed), upgrade.
func child(t *testing.T, dsn string, upgrade UpgradeFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := storage.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := upgrade(ctx, db); err != nil {
		t.Fatal(err)
	}
}

// check reads every version table: one row, at the version wanted.
func check(t *testing.T, dsn string, versions []Version) {
	t.Helper()
	db, err := storage.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, v := range versions {
		var rows, version int
		err := db.QueryRow(t.Context(), fmt.Sprintf(`SELECT COUNT(*), COALESCE(MAX(version), -1) FROM %s`, v.Table)).Scan(&rows, &version)
		if err != nil {
			t.Errorf("%s: %v", v.Table, err)
			continue
		}
		if rows != 1 || version != v.Want {
			t.Errorf("%s holds %d rows, version %d; want 1 row, version %d", v.Table, rows, version, v.Want)
		}
	}
}
