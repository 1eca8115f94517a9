package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "samtal.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
	for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "10000", "synchronous": "2"} {
		var got string
		if err := db.RawDB.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	// Foreign keys are enforced, not just declared.
	_, err = db.Exec(t.Context(), `CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (p INTEGER REFERENCES parent(id))`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(t.Context(), `INSERT INTO child (p) VALUES (42)`); err == nil {
		t.Error("insert violating a foreign key succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), "  "); !errors.Is(err, ErrEmptyDSN) {
		t.Errorf("empty DSN: %v, want ErrEmptyDSN", err)
	}
	if _, err := Open(t.Context(), "file:?x=1"); err == nil {
		t.Error("empty SQLite path accepted")
	}
	// A directory cannot be a database; the error says which.
	dir := t.TempDir()
	if _, err := Open(t.Context(), dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("directory as database: %v", err)
	}
	// A PostgreSQL that is not there fails at Open, and the password never reaches the error.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Open(ctx, "postgres://samtal:s3cret@127.0.0.1:1/samtal?sslmode=disable")
	if err == nil {
		t.Fatal("unreachable PostgreSQL accepted")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode %v (%v), want 0600: it holds access tokens", fi.Mode().Perm(), err)
	}
}

func TestRedact(t *testing.T) {
	for in, secret := range map[string]string{
		"postgres://samtal:s3cret@db/samtal":                       "s3cret",
		"postgres://db/samtal?user=samtal&password=s3cret":         "s3cret",
		"postgresql://db/samtal?sslpassword=s3cret&sslmode=verify": "s3cret",
	} {
		if out := Redact(in); strings.Contains(out, secret) || !strings.Contains(out, "db") {
			t.Errorf("Redact(%q) = %q", in, out)
		}
	}
	if Redact("/var/lib/samtal.db") != "/var/lib/samtal.db" {
		t.Error("a file path was changed")
	}
}

// TestOpenSQLiteOddPath: a file path with characters a URI gives a meaning ('#', '?', '%', as
// a test's temporary directory has for a subtest named "") opens that file, not a shorter or
// decoded one: before, "a#b/x.db" opened "a", and every such test shared one database.
func TestOpenSQLiteOddPath(t *testing.T) {
	base := t.TempDir()
	for _, name := range []string{"a#00", "b?c", "d%41e", "f%"} {
		dir := filepath.Join(base, name)
		path := filepath.Join(dir, "samtal.db")
		db, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := db.Exec(t.Context(), `CREATE TABLE here (x INTEGER)`); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		db.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: the database is not where it was named: %v", name, err)
		}
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files made in %s: %q, want only the four directories", base, names)
	}
	// A file: URI is one: its path is percent-decoded.
	db, err := Open(t.Context(), "file:"+filepath.Join(base, "g%20h.db")+"?_txlock=deferred")
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(base, "g h.db")); err != nil {
		t.Errorf("file: URI: %v", err)
	}
}
