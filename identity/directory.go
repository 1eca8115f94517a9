package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"maunium.net/go/mautrix/id"
)

// Errors of the directory that callers branch on.
var (
	// ErrNotFound: no resolver knows the address. A Directory never guesses: an address is
	// either confirmed to belong to a Matrix account or not found. Lookups return a
	// *NotFoundError, which matches ErrNotFound with errors.Is.
	ErrNotFound = errors.New("identity: not found")
	// ErrInvalidAddress: the input is not an email address a directory can look up.
	ErrInvalidAddress = errors.New("identity: invalid email address")
	// ErrUnavailable: a resolver could not answer (server down, timeout, refused request). It is
	// not a not-found: the address may well exist.
	ErrUnavailable = errors.New("identity: directory unavailable")
	// ErrAmbiguous: a resolver found more than one account for the address and will not pick one.
	ErrAmbiguous = errors.New("identity: address matches more than one account")
	// ErrWellKnown: a server's .well-known/matrix document is broken or redirects to another host.
	ErrWellKnown = errors.New("identity: broken .well-known/matrix")
)

// NotFoundError is the answer when no resolver knows an address: Tried names the resolvers
// asked, in order.
type NotFoundError struct {
	Address string
	Tried   []string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("identity: %s: not found (asked %s)", e.Address, strings.Join(e.Tried, ", "))
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Address is a parsed email address, with the domain in lower case.
type Address struct {
	Local  string // the part before the @, as written
	Domain string // the domain in lower case, ASCII
}

// String returns local@domain.
func (a Address) String() string { return a.Local + "@" + a.Domain }

// Key is the address as the directory compares and caches it: all in lower case.
func (a Address) Key() string { return strings.ToLower(a.Local) + "@" + a.Domain }

// maxAddressLen is RFC 5321's limit on a forward path's mailbox.
const maxAddressLen = 254

// ParseAddress parses a bare email address such as anna.berg@agency-b.se. A display name
// ("Anna <anna@...>") is refused, and so is an internationalised domain: Matrix server names
// are ASCII, so such a domain must be written in its xn-- form, which the error names.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxAddressLen {
		return Address{}, fmt.Errorf("%w: %d bytes (want 3 to %d)", ErrInvalidAddress, len(s), maxAddressLen)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || at == len(s)-1 {
		return Address{}, fmt.Errorf("%w: %q has no local part and domain around an @", ErrInvalidAddress, s)
	}
	local, domain := s[:at], s[at+1:]
	if !utf8.ValidString(s) {
		return Address{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidAddress)
	}
	for _, r := range domain {
		if r > 0x7f {
			ascii, err := idna.Lookup.ToASCII(domain)
			if err != nil {
				return Address{}, fmt.Errorf("%w: internationalised domain %q is not a valid IDN: %v", ErrInvalidAddress, domain, err)
			}
			return Address{}, fmt.Errorf("%w: internationalised domain %q: write it in its ASCII form %q", ErrInvalidAddress, domain, ascii)
		}
	}
	for _, r := range local {
		if r > 0x7f {
			return Address{}, fmt.Errorf("%w: the local part of %q is not ASCII, which no Matrix ID can hold", ErrInvalidAddress, s)
		}
	}
	parsed, err := mail.ParseAddress(s)
	if err != nil || parsed.Address != s || parsed.Name != "" {
		return Address{}, fmt.Errorf("%w: %q is not a bare address", ErrInvalidAddress, s)
	}
	domain = strings.ToLower(domain)
	if _, err := idna.Lookup.ToASCII(domain); err != nil || !strings.Contains(domain, ".") && domain != "localhost" {
		return Address{}, fmt.Errorf("%w: %q is not a domain name", ErrInvalidAddress, domain)
	}
	return Address{Local: local, Domain: domain}, nil
}

// Match is a Directory's answer: the account an address belongs to, and where that came from.
type Match struct {
	Address string    // the address asked about, in lower case
	UserID  id.UserID // the account
	Source  string    // the resolver that answered, by Name
	Detail  string    // how it knows, for people: "rule {local} for agency-b.se, profile found"
	Cached  bool      // the answer came from the Directory's cache
	At      time.Time // when the resolver answered
}

// Resolver is one way to map an email address to a Matrix ID. Resolve returns an error matching
// ErrNotFound when it does not know the address, and another error when it could not answer.
type Resolver interface {
	Name() string
	Resolve(ctx context.Context, addr Address) (Match, error)
}

// ResolverFunc adapts a function to a Resolver.
type ResolverFunc struct {
	ResolverName string
	Func         func(ctx context.Context, addr Address) (Match, error)
}

// Name returns ResolverName.
func (f ResolverFunc) Name() string { return f.ResolverName }

// Resolve calls Func.
func (f ResolverFunc) Resolve(ctx context.Context, addr Address) (Match, error) {
	return f.Func(ctx, addr)
}

// DirectoryOptions configure a Directory. The zero value caches answers for ten minutes and
// not-founds for one.
type DirectoryOptions struct {
	TTL         time.Duration // how long a found address is cached; 0 means 10 minutes, <0 no cache
	NotFoundTTL time.Duration // how long a not-found is cached; 0 means 1 minute, <0 not cached
	MaxEntries  int           // cache size; 0 means 10,000 (the oldest half is dropped when full)
	Logger      *slog.Logger  // nil means slog.Default()
}

// Directory maps email addresses to Matrix IDs through a chain of resolvers, tried in order:
// the first that knows the address answers. Answers are cached. Safe for concurrent use.
type Directory struct {
	resolvers []Resolver
	opts      DirectoryOptions
	log       *slog.Logger
	now       func() time.Time

	mu    sync.Mutex
	cache map[string]cacheEntry
}

type cacheEntry struct {
	match   Match
	err     error // a *NotFoundError, or nil
	expires time.Time
}

// NewDirectory returns a Directory that asks resolvers in order.
func NewDirectory(opts DirectoryOptions, resolvers ...Resolver) *Directory {
	if opts.TTL == 0 {
		opts.TTL = 10 * time.Minute
	}
	if opts.NotFoundTTL == 0 {
		opts.NotFoundTTL = time.Minute
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 10000
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Directory{resolvers: resolvers, opts: opts, log: log, now: time.Now, cache: map[string]cacheEntry{}}
}

// Lookup returns the Matrix account of an email address. It returns an error matching
// ErrInvalidAddress for bad input, a *NotFoundError when every resolver said it does not know
// the address, and an error matching ErrUnavailable when none knew and at least one could not
// answer (so that a caller never takes an outage for a not-found).
func (d *Directory) Lookup(ctx context.Context, address string) (Match, error) {
	addr, err := ParseAddress(address)
	if err != nil {
		return Match{}, err
	}
	key := addr.Key()
	if m, err, ok := d.cached(key); ok {
		return m, err
	}
	var failures []error
	tried := make([]string, 0, len(d.resolvers))
	for _, r := range d.resolvers {
		tried = append(tried, r.Name())
		m, err := r.Resolve(ctx, addr)
		switch {
		case err == nil:
			m.Address, m.Source = key, r.Name()
			if m.At.IsZero() {
				m.At = d.now()
			}
			d.store(key, m, nil, d.opts.TTL)
			d.log.Debug("identity: address resolved", "source", m.Source, "user", m.UserID)
			return m, nil
		case errors.Is(err, ErrNotFound):
			continue
		case ctx.Err() != nil:
			return Match{}, ctx.Err()
		default:
			d.log.Warn("identity: resolver could not answer", "resolver", r.Name(), "err", err)
			failures = append(failures, fmt.Errorf("%s: %w", r.Name(), err))
		}
	}
	if len(failures) > 0 {
		return Match{}, fmt.Errorf("%w: %s found by none that answered: %w", ErrUnavailable, key, errors.Join(failures...))
	}
	nf := &NotFoundError{Address: key, Tried: tried}
	d.store(key, Match{}, nf, d.opts.NotFoundTTL)
	return Match{}, nf
}

func (d *Directory) cached(key string) (Match, error, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.cache[key]
	if !ok || !d.now().Before(e.expires) {
		return Match{}, nil, false
	}
	m := e.match
	m.Cached = e.err == nil
	return m, e.err, true
}

func (d *Directory) store(key string, m Match, err error, ttl time.Duration) {
	if ttl < 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.cache) >= d.opts.MaxEntries {
		d.evict()
	}
	d.cache[key] = cacheEntry{match: m, err: err, expires: d.now().Add(ttl)}
}

// evict drops expired entries and, if that is not enough, those closest to expiry, down to
// half the size. Called with mu held.
func (d *Directory) evict() {
	now := d.now()
	for k, e := range d.cache {
		if !now.Before(e.expires) {
			delete(d.cache, k)
		}
	}
	if len(d.cache) <= d.opts.MaxEntries/2 {
		return
	}
	keys := make([]string, 0, len(d.cache))
	for k := range d.cache {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return d.cache[a].expires.Compare(d.cache[b].expires) })
	for _, k := range keys[:len(keys)-d.opts.MaxEntries/2] {
		delete(d.cache, k)
	}
}

// Forget drops an address from the cache, so that the next Lookup asks the resolvers again.
func (d *Directory) Forget(address string) {
	addr, err := ParseAddress(address)
	if err != nil {
		return
	}
	d.mu.Lock()
	delete(d.cache, addr.Key())
	d.mu.Unlock()
}
