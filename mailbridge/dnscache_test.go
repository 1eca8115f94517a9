package mailbridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/dnstest"
)

// countingResolver counts the lookups that reach the resolver behind the cache (a real DNS
// server on loopback).
type countingResolver struct {
	Resolver
	mu    sync.Mutex
	asked map[string]int
}

func (c *countingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	c.mu.Lock()
	c.asked[name]++
	c.mu.Unlock()
	return c.Resolver.LookupTXT(ctx, name)
}

func (c *countingResolver) times(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked[name]
}

func TestCachingResolver(t *testing.T) {
	zone := dnstest.Start(t)
	zone.TXT("_dmarc.agency.example", "v=DMARC1; p=reject")
	zone.ServFail("_dmarc.flaky.example")
	behind := &countingResolver{Resolver: DNSServer(zone.Addr), asked: map[string]int{}}
	cache := CachingResolver(behind, time.Minute).(*dnsCache)
	now := time.Now()
	var clock atomic.Int64
	cache.now = func() time.Time { return now.Add(time.Duration(clock.Load())) }
	ctx := t.Context()

	// A record found is kept: asked once, for 20 lookups at the same time and after.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			txt, err := cache.LookupTXT(ctx, "_dmarc.agency.example")
			if err != nil || len(txt) != 1 || txt[0] != "v=DMARC1; p=reject" {
				t.Errorf("LookupTXT = %q, %v", txt, err)
			}
		})
	}
	wg.Wait()
	if _, err := cache.LookupTXT(ctx, "_DMARC.Agency.Example"); err != nil {
		t.Fatal(err)
	}
	if n := behind.times("_dmarc.agency.example"); n != 1 {
		t.Errorf("found record asked %d times, want once", n)
	}
	// What a caller does with its answer does not change the next one's.
	txt, _ := cache.LookupTXT(ctx, "_dmarc.agency.example")
	txt[0] = "changed"
	if txt, _ := cache.LookupTXT(ctx, "_dmarc.agency.example"); txt[0] != "v=DMARC1; p=reject" {
		t.Errorf("cached answer changed by a caller: %q", txt)
	}

	// A name that does not exist is kept too, as not found.
	for range 3 {
		_, err := cache.LookupTXT(ctx, "_dmarc.nothing.example")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Fatalf("missing name: %v, want not found", err)
		}
	}
	if n := behind.times("_dmarc.nothing.example"); n != 1 {
		t.Errorf("missing name asked %d times, want once", n)
	}

	// A failure is not kept: the next lookup asks again and gets the healed answer.
	if _, err := cache.LookupTXT(ctx, "_dmarc.flaky.example"); err == nil || isNotFound(err) {
		t.Fatalf("SERVFAIL: %v, want a temporary error", err)
	}
	zone.Heal("_dmarc.flaky.example")
	zone.TXT("_dmarc.flaky.example", "v=DMARC1; p=none")
	if txt, err := cache.LookupTXT(ctx, "_dmarc.flaky.example"); err != nil || len(txt) != 1 {
		t.Fatalf("after the failure: %q, %v", txt, err)
	}
	if n := behind.times("_dmarc.flaky.example"); n != 2 {
		t.Errorf("failing name asked %d times, want twice", n)
	}

	// After maxAge the record is asked again, and a change is seen.
	zone.TXT("_dmarc.agency.example", "v=DMARC1; p=none")
	clock.Store(int64(time.Minute))
	if txt, err := cache.LookupTXT(ctx, "_dmarc.agency.example"); err != nil || txt[0] != "v=DMARC1; p=none" {
		t.Errorf("after maxAge: %q, %v; want the new record", txt, err)
	}
	if n := behind.times("_dmarc.agency.example"); n != 2 {
		t.Errorf("record asked %d times after maxAge, want twice", n)
	}

	// A caller whose context ends stops waiting; the answer still comes for the others.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := cache.LookupTXT(done, "_dmarc.late.example"); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: %v, want context.Canceled", err)
	}
	zone.TXT("_dmarc.late.example", "v=DMARC1; p=none")
	if txt, err := cache.LookupTXT(ctx, "_dmarc.late.example"); err != nil && !isNotFound(err) {
		t.Errorf("after an ended caller: %q, %v", txt, err)
	}
}

// fixedResolver answers every TXT lookup with the name itself, counting them; for the
// eviction test, which needs thousands of names and no particular answers.
type fixedResolver struct {
	Resolver
	n atomic.Int64
}

func (f *fixedResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.n.Add(1)
	return []string{name}, nil
}

// TestCachingResolverBounded: the cache keeps at most DNSCacheSize answers, the oldest going
// first.
func TestCachingResolverBounded(t *testing.T) {
	behind := &fixedResolver{}
	cache := CachingResolver(behind, time.Hour).(*dnsCache)
	for i := range 3 * DNSCacheSize {
		if _, err := cache.LookupTXT(t.Context(), fmt.Sprintf("n%d.example", i)); err != nil {
			t.Fatal(err)
		}
	}
	cache.mu.Lock()
	size, order := len(cache.entries), len(cache.order)
	cache.mu.Unlock()
	if size > DNSCacheSize+1 || order > 2*DNSCacheSize+1 {
		t.Errorf("%d entries and %d keys in order, want at most %d", size, order, DNSCacheSize+1)
	}
	asked := behind.n.Load()
	if _, err := cache.LookupTXT(t.Context(), fmt.Sprintf("n%d.example", 3*DNSCacheSize-1)); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.LookupTXT(t.Context(), "n0.example"); err != nil {
		t.Fatal(err)
	}
	if got := behind.n.Load() - asked; got != 1 {
		t.Errorf("%d lookups for the newest and the oldest name, want 1 (the oldest, evicted)", got)
	}
}
