package mailbridge

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// TestSpool: a stored mail is due at once, with its envelope and bytes as received; a retry
// is due only at its time; a delivered one is never due again; and the schema is the same on
// SQLite and PostgreSQL.
func TestSpool(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "spool.db")
			if dialect == "postgres" {
				if testing.Short() {
					t.Skip("starts PostgreSQL")
				}
				dsn = pgtest.New(t)
			}
			db, err := matrix.OpenDatabase(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			s, err := openSpool(t.Context(), db)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := openSpool(t.Context(), db); err != nil {
				t.Fatalf("second open (schema already there): %v", err)
			}
			raw := []byte("Subject: x\r\n\r\n\x00binary\xff\r\n")
			id, err := s.store(t.Context(), "a@b.example", raw, []target{{room: "!a:hs", recipient: "a@x"}, {room: "#b:hs", recipient: "b@x", createSpec: "{}"}})
			if err != nil {
				t.Fatal(err)
			}
			due, err := s.due(t.Context(), time.Now(), 10)
			if err != nil || len(due) != 2 {
				t.Fatalf("due = %d, %v; want 2", len(due), err)
			}
			if d := due[0]; d.spoolID != id || d.mailFrom != "a@b.example" || !bytes.Equal(d.message, raw) {
				t.Errorf("due[0] = %+v", d)
			}
			if err := s.delivered(t.Context(), due[0], 7); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Hour)
			if err := s.retryLater(t.Context(), due[1], later, "homeserver down"); err != nil {
				t.Fatal(err)
			}
			if due, err := s.due(t.Context(), time.Now(), 10); err != nil || len(due) != 0 {
				t.Fatalf("due now = %+v, %v; want none", due, err)
			}
			next, ok, err := s.nextAttempt(t.Context())
			if err != nil || !ok || next.UnixMilli() != later.UnixMilli() {
				t.Errorf("nextAttempt = %v, %v, %v; want %v", next, ok, err, later)
			}
			due, err = s.due(t.Context(), later, 10)
			if err != nil || len(due) != 1 || due[0].target != "#b:hs" || due[0].attempts != 1 || due[0].createSpec != "{}" {
				t.Fatalf("due later = %+v, %v", due, err)
			}
		})
	}
}
