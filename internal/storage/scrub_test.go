package storage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTruncateWAL: content deleted under SecureDelete is gone from the database file and its
// log once TruncateWAL reports the log emptied; a reader of an older snapshot keeps it from
// emptying the log (it reports false after its short wait, not an error), and the connection
// it used goes back to the pool with the usual busy timeout.
func TestTruncateWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scrub.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	const secret = "SCRUB-MARKER-4711"
	if _, err := db.Exec(ctx, `CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO t (body) VALUES ($1), ('kept')`, secret); err != nil {
		t.Fatal(err)
	}
	onDisk := func() []byte {
		var all []byte
		for _, name := range []string{path, path + "-wal"} {
			b, err := os.ReadFile(name)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			all = append(all, b...)
		}
		return all
	}
	if !bytes.Contains(onDisk(), []byte(secret)) {
		t.Fatal("the marker is not on disk before it is deleted (or the file is not read)")
	}

	// A reader holds a snapshot from before the delete (a deferred transaction: the pool's
	// begin immediately, as writers).
	reader, err := db.RawDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if _, err := reader.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := reader.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := SecureDelete(ctx, db); err != nil {
			return err
		}
		_, err := db.Exec(ctx, `DELETE FROM t WHERE body = $1`, secret)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := TruncateWAL(ctx, db, 50*time.Millisecond); err != nil || done {
		t.Errorf("TruncateWAL with a reader of an older snapshot: %v, %v; want false, nil", done, err)
	}
	if _, err := reader.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if done, err := TruncateWAL(ctx, db, time.Second); err != nil || !done {
		t.Fatalf("TruncateWAL: %v, %v; want true", done, err)
	}
	file := onDisk()
	if bytes.Contains(file, []byte(secret)) {
		t.Error("the deleted marker is still in the database file or its log")
	}
	if !bytes.Contains(file, []byte("kept")) {
		t.Error("the row not deleted is not in the file")
	}
	// Every connection of the pool waits the usual time for locks.
	db.RawDB.SetMaxOpenConns(1)
	var timeout int
	if err := db.RawDB.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&timeout); err != nil || timeout != sqliteBusyTimeoutMS {
		t.Errorf("busy_timeout after TruncateWAL: %d, %v; want %d", timeout, err, sqliteBusyTimeoutMS)
	}
}
