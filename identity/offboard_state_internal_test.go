package identity

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/storage"
)

// TestSeenLogoutTokensExpire: a seen token ID is kept until the time it was given (after which
// the token is refused for its age or exp anyway) and then dropped from the table.
func TestSeenLogoutTokensExpire(t *testing.T) {
	ctx := t.Context()
	raw, err := storage.Open(ctx, filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	s := &dbJTI{db: &offboardDB{raw: raw}}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	until := t0.Add(3 * time.Minute)
	check := func(now time.Time, jti string, want bool) {
		t.Helper()
		fresh, err := s.remember(ctx, "https://idp.test", jti, now, until)
		if err != nil {
			t.Fatal(err)
		}
		if fresh != want {
			t.Fatalf("remember %s at %s = %v, want %v", jti, now.Sub(t0), fresh, want)
		}
	}
	check(t0, "a", true)
	check(t0.Add(2*time.Minute), "a", false) // a replay before it expires
	check(t0, "b", true)
	db, err := s.db.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		t.Helper()
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM samtal_identity_logout_jti`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
	check(t0.Add(4*time.Minute), "c", true) // a and b expired meanwhile: dropped
	if n := count(); n != 1 {
		t.Fatalf("%d rows after expiry, want 1 (c)", n)
	}
	// The same ID from another issuer is another token.
	fresh, err := s.remember(ctx, "https://other-idp.test", "c", t0.Add(4*time.Minute), until.Add(time.Hour))
	if err != nil || !fresh {
		t.Fatalf("the same jti from another issuer: %v, %v; want fresh", fresh, err)
	}
}
