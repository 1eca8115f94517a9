package mailbridge

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// A gateway that checks every sender asks DNS for the same few records over and over: a case
// system mailing the room a thousand times an hour costs two thousand SPF and DMARC lookups of
// one domain. Mail servers usually sit beside a caching resolver; CachingResolver is one in
// process, for a gateway that has none close by.

// DNSCacheSize is the most answers a CachingResolver keeps; when it is full, the oldest go first.
const DNSCacheSize = 4096

// CachingResolver returns a Resolver that answers from r and keeps each answer for maxAge: a
// found record, and also that a name does not exist (NXDOMAIN or no such record), since the
// lookups of a sender that publishes no DMARC record repeat as often as those of one that
// does. A failure (a timeout, SERVFAIL) is not kept: the next mail asks again. Lookups of the
// same name at the same time share one query. Go's resolver does not tell the records' TTL,
// so maxAge should stay short (a minute): a changed record is seen at most maxAge late.
func CachingResolver(r Resolver, maxAge time.Duration) Resolver {
	return &dnsCache{r: r, maxAge: maxAge, now: time.Now, entries: map[dnsKey]*dnsEntry{}}
}

type dnsKey struct {
	kind byte // 't' TXT, 'm' MX, 'i' IP address, 'a' reverse
	name string
}

// dnsEntry is one answer, or one lookup under way (ready not yet closed).
type dnsEntry struct {
	ready chan struct{}
	at    time.Time
	value any
	err   error
}

type dnsCache struct {
	r      Resolver
	maxAge time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[dnsKey]*dnsEntry
	order   []dnsKey // insertion order, for eviction; may hold keys already gone
}

// dnsQueryTimeout bounds a query that callers share; each caller waits no longer than its
// own context.
const dnsQueryTimeout = 10 * time.Second

// lookup answers key from the cache, or with ask, sharing one ask between concurrent callers.
func (c *dnsCache) lookup(ctx context.Context, key dnsKey, ask func(context.Context) (any, error)) (any, error) {
	key.name = strings.ToLower(key.name)
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok {
		select {
		case <-e.ready:
			if c.now().Sub(e.at) >= c.maxAge {
				delete(c.entries, key) // too old: ask again
				ok = false
			}
		default: // asked by someone else right now: wait for that answer
		}
	}
	if !ok {
		e = &dnsEntry{ready: make(chan struct{})}
		c.entries[key] = e
		c.evict()
		c.order = append(c.order, key)
		// The query belongs to every caller that waits for it, so none of their contexts
		// ends it: it has a timeout of its own.
		go func() {
			qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dnsQueryTimeout)
			defer cancel()
			v, err := ask(qctx)
			c.mu.Lock()
			e.value, e.err, e.at = v, err, c.now()
			if err != nil && !isNotFound(err) && c.entries[key] == e {
				delete(c.entries, key) // a failure is not kept
			}
			close(e.ready)
			c.mu.Unlock()
		}()
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.value, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// evict makes room for one more entry; c.mu is held.
func (c *dnsCache) evict() {
	for len(c.entries) > DNSCacheSize && len(c.order) > 0 {
		k := c.order[0]
		c.order = c.order[1:]
		if e, ok := c.entries[k]; ok {
			select {
			case <-e.ready:
				delete(c.entries, k)
			default: // under way: its asker still needs it
			}
		}
	}
	if len(c.order) > 2*DNSCacheSize {
		// Drop the keys that are gone already.
		kept := c.order[:0]
		for _, k := range c.order {
			if _, ok := c.entries[k]; ok {
				kept = append(kept, k)
			}
		}
		c.order = kept
	}
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func (c *dnsCache) LookupTXT(ctx context.Context, name string) ([]string, error) {
	v, err := c.lookup(ctx, dnsKey{'t', name}, func(ctx context.Context) (any, error) { return c.r.LookupTXT(ctx, name) })
	txt, _ := v.([]string)
	return slices.Clone(txt), err
}

func (c *dnsCache) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	v, err := c.lookup(ctx, dnsKey{'m', name}, func(ctx context.Context) (any, error) { return c.r.LookupMX(ctx, name) })
	mx, _ := v.([]*net.MX)
	return slices.Clone(mx), err
}

func (c *dnsCache) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	v, err := c.lookup(ctx, dnsKey{'i', host}, func(ctx context.Context) (any, error) { return c.r.LookupIPAddr(ctx, host) })
	ips, _ := v.([]net.IPAddr)
	return slices.Clone(ips), err
}

func (c *dnsCache) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	v, err := c.lookup(ctx, dnsKey{'a', addr}, func(ctx context.Context) (any, error) { return c.r.LookupAddr(ctx, addr) })
	names, _ := v.([]string)
	return slices.Clone(names), err
}
