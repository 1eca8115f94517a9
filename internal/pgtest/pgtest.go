// Package pgtest starts a real PostgreSQL server for a test, on a loopback port with its data
// in a temporary directory, the way matrixtest starts a homeserver.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq" // the driver samtal uses for PostgreSQL
)

// EnvBin names a directory holding initdb and postgres, for machines where they are not in
// Debian's place (/usr/lib/postgresql/*/bin) or on PATH.
const EnvBin = "SAMTAL_POSTGRES_BIN"

// New starts a PostgreSQL server for the test, stopped when the test ends, and returns the URL
// of an empty database on it. Each server is its own, on a copy of one cluster that initdb made
// for the whole run (see template).
func New(tb testing.TB) string {
	tb.Helper()
	bin, err := findBin()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "samtal-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	cred, err := credential(dir)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	data := filepath.Join(dir, "data")
	if err := newCluster(bin, data, cred); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50")
	srv.Stdout, srv.Stderr = logf, logf
	// Its own process group, and killed with us if the test binary dies.
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		tb.Fatalf("pgtest: start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		// Immediate shutdown: no checkpoint, since the data directory goes with the test.
		_ = srv.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
	})

	admin := fmt.Sprintf("postgres://samtal@127.0.0.1:%d/postgres?sslmode=disable", port)
	db, err := sql.Open("postgres", admin)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = db.PingContext(context.Background())
		if err == nil {
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			tb.Fatalf("pgtest: postgres exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgtest: postgres did not accept connections: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return fmt.Sprintf("postgres://samtal@127.0.0.1:%d/%s?sslmode=disable", port, name)
}

// findBin finds the directory of initdb and postgres.
func findBin() (string, error) {
	if d := os.Getenv(EnvBin); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no PostgreSQL server found: install it (Debian: apt-get install postgresql; scripts/test.sh does) or set $%s", EnvBin)
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// credential returns who runs PostgreSQL: us, or the postgres user when we are root (the
// server refuses to run as root), with dir handed to it.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and there is no postgres user to run the server as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
