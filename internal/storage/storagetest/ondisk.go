package storagetest

import (
	"os"
	"testing"
)

// OnDisk returns what a SQLite database at path holds on disk: the database file and its
// write-ahead log, one after the other, for tests that look for content that must be gone.
func OnDisk(tb testing.TB, path string) []byte {
	tb.Helper()
	var all []byte
	for _, name := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(name)
		if err != nil && !os.IsNotExist(err) {
			tb.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}
