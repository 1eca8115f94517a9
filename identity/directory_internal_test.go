package identity

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDirectoryCacheTTL: a found address is asked again only after TTL, a not-found after
// NotFoundTTL, and an outage is never cached.
func TestDirectoryCacheTTL(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	asked := 0
	var answer error
	r := ResolverFunc{ResolverName: "counting", Func: func(_ context.Context, a Address) (Match, error) {
		asked++
		if answer != nil {
			return Match{}, answer
		}
		return Match{UserID: "@anna:a.test"}, nil
	}}
	d := NewDirectory(DirectoryOptions{TTL: time.Hour, NotFoundTTL: time.Minute}, r)
	d.now = func() time.Time { return now }
	ctx := context.Background()
	lookup := func(want int) {
		t.Helper()
		_, _ = d.Lookup(ctx, "anna@a.test")
		if asked != want {
			t.Fatalf("resolver asked %d times, want %d", asked, want)
		}
	}
	lookup(1)
	now = now.Add(59 * time.Minute)
	lookup(1)
	now = now.Add(time.Minute)
	answer = ErrNotFound
	lookup(2)
	now = now.Add(59 * time.Second)
	lookup(2)
	now = now.Add(time.Second)
	answer = errors.Join(ErrUnavailable)
	lookup(3)
	lookup(4)
}

func TestDirectoryCacheEvicts(t *testing.T) {
	r := ResolverFunc{ResolverName: "any", Func: func(_ context.Context, a Address) (Match, error) {
		return Match{UserID: "@x:a.test"}, nil
	}}
	d := NewDirectory(DirectoryOptions{MaxEntries: 10}, r)
	for i := range 100 {
		_, _ = d.Lookup(context.Background(), string(rune('a'+i%26))+string(rune('a'+i/26))+"@a.test")
	}
	if n := len(d.cache); n > 10 {
		t.Fatalf("cache holds %d entries, limit 10", n)
	}
}
