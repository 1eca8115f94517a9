package mailbridge

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestExpireDelivered: a sweep deletes the mail delivered into all its rooms and received
// before the cutoff, with its deliveries, in batches; it keeps mail with a delivery pending,
// posted or dead, mail with an IMAP flag or move to do, and mail received after the cutoff.
// Drop deletes dead mail only. On SQLite and on PostgreSQL.
func TestExpireDelivered(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			if dialect == "postgres" && testing.Short() {
				t.Skip("starts PostgreSQL")
			}
			s, db := openTestSpool(t, dialect)
			ctx := t.Context()
			store := func(rooms ...string) int64 {
				t.Helper()
				var targets []target
				for _, r := range rooms {
					targets = append(targets, target{room: r, recipient: "r@agency.example"})
				}
				id, err := s.store(ctx, "a@agency.example", benchMail(), targets)
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			deliver := func(id int64, room string) {
				t.Helper()
				if err := s.delivered(ctx, delivery{spoolID: id, target: room}, id); err != nil {
					t.Fatal(err)
				}
			}
			done := store("!a:hs", "!b:hs")
			deliver(done, "!a:hs")
			deliver(done, "!b:hs")
			half := store("!a:hs", "!b:hs")
			deliver(half, "!a:hs")
			dead := store("!a:hs")
			if err := s.giveUp(ctx, delivery{spoolID: dead, target: "!a:hs"}, "test"); err != nil {
				t.Fatal(err)
			}
			pending := store("!a:hs")
			posted := store("!a:hs")
			if err := s.posted(ctx, delivery{spoolID: posted, target: "!a:hs", receivedAt: time.Now()}, []int64{1}, nil); err != nil {
				t.Fatal(err)
			}
			flag := store("!a:hs")
			deliver(flag, "!a:hs")
			if _, err := db.Exec(ctx, `INSERT INTO samtal_mail_imap_after (account, mailbox, uid_validity, uid, spool_id) VALUES ('u@imap', 'INBOX', 1, 1, $1)`, flag); err != nil {
				t.Fatal(err)
			}
			var many []int64 // more than a batch
			for range expireBatch + 44 {
				id := store("!c:hs")
				deliver(id, "!c:hs")
				many = append(many, id)
			}
			// All of it was received two hours ago, and one more delivered mail just now.
			if _, err := db.Exec(ctx, `UPDATE samtal_mail_spool SET received_at = $1`, time.Now().Add(-2*time.Hour).UnixMilli()); err != nil {
				t.Fatal(err)
			}
			young := store("!a:hs")
			deliver(young, "!a:hs")

			n, err := s.expire(ctx, time.Now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if want := 1 + len(many); n != want {
				t.Errorf("expire deleted %d mails, want %d", n, want)
			}
			left := spoolIDs(t, s, `SELECT id FROM samtal_mail_spool ORDER BY id`)
			if want := []int64{half, dead, pending, posted, flag, young}; !slices.Equal(left, want) {
				t.Errorf("spool after expire: %v, want %v", left, want)
			}
			if gone := spoolIDs(t, s, `SELECT spool_id FROM samtal_mail_delivery WHERE spool_id = $1 OR target = '!c:hs'`, done); len(gone) != 0 {
				t.Errorf("deliveries of deleted mail left: %v", gone)
			}
			if n, err := s.expire(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
				t.Errorf("second expire: %d, %v; want nothing", n, err)
			}

			for _, id := range []int64{half, pending, posted, done, young} {
				if err := s.drop(ctx, id); !errors.Is(err, ErrNotInSpool) {
					t.Errorf("drop %d: %v, want ErrNotInSpool", id, err)
				}
			}
			if err := s.drop(ctx, dead); err != nil {
				t.Fatalf("drop dead mail: %v", err)
			}
			if err := s.drop(ctx, dead); !errors.Is(err, ErrNotInSpool) {
				t.Errorf("drop dead mail again: %v, want ErrNotInSpool", err)
			}
			left = spoolIDs(t, s, `SELECT id FROM samtal_mail_spool ORDER BY id`)
			if want := []int64{half, pending, posted, flag, young}; !slices.Equal(left, want) {
				t.Errorf("spool after drop: %v, want %v", left, want)
			}
		})
	}
}

// spoolIDs runs a query of IDs.
func spoolIDs(t *testing.T, s *spool, query string, args ...any) []int64 {
	t.Helper()
	rows, err := s.db.Query(t.Context(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", query, err))
	}
	return ids
}
