package federation

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/samtalhq/samtal/matrix"
)

// Defaults of Options.
const (
	defaultMaxSize    = 4 << 20
	defaultMaxMembers = 1000
	defaultRefresh    = 15 * time.Minute
	defaultTimeout    = 30 * time.Second
)

// Options configure Load and a Watcher. The zero value is a working default: no cache file,
// a 30-second HTTP client, refreshed every 15 minutes.
type Options struct {
	CacheFile  string        // where the last good list is kept (owner-only) and read at start; "" keeps none
	HTTPClient *http.Client  // nil means a client with a 30-second timeout
	MaxSize    int64         // largest document in bytes; 0 means 4 MiB
	MaxMembers int           // most members; 0 means 1000
	Refresh    time.Duration // how often Run fetches the list; 0 means 15 minutes
	Logger     *slog.Logger  // nil means slog.Default()
	// OnChange is called after a newer list has replaced the last good one (old is nil for the
	// first), from the goroutine that refreshed: hand it to a Reconciler to bring the rooms'
	// ACLs up to date.
	OnChange func(ctx context.Context, old, new *List)
	// OnRefresh is called after every attempt, for metrics: err is nil when the list was
	// taken (or unchanged), else why it was refused; Reason(err) gives a label.
	OnRefresh func(err error)
	// Now is the clock; nil means time.Now. For tests of expiry.
	Now func() time.Time
}

// Stats are a Watcher's counters, for metrics and health checks.
type Stats struct {
	Refreshes   uint64    // fetch attempts
	Failures    uint64    // attempts that refused the fetched list or could not fetch it
	Version     uint64    // version of the list in use; 0 when none
	LastSuccess time.Time // last attempt that ended with a good list (new or unchanged)
	LastError   string    // why the last failed attempt failed (no list content in it)
}

// Watcher keeps the federation list current: it fetches it from its URL, verifies it, and
// keeps the last good list when a newer one cannot be had. It never falls back to allowing
// everyone: before the first good list there is none (ErrNoList), and a bad list never
// replaces a good one. Its methods are safe for concurrent use.
type Watcher struct {
	url  string
	key  crypto.PublicKey
	opts Options
	log  *slog.Logger
	http *http.Client

	refreshMu sync.Mutex // one refresh at a time

	mu    sync.Mutex
	cur   *List
	stats Stats
}

// NewWatcher returns a Watcher for the list at listURL (https, or http for tests and local
// files served next door), signed with key (see ParsePublicKey). It reads the cache file, if
// any; call Run or Refresh to fetch.
func NewWatcher(listURL string, key crypto.PublicKey, opts Options) (*Watcher, error) {
	u, err := url.Parse(listURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("federation: the list URL must be an http(s) URL, not %q", listURL)
	}
	if _, err := algorithmFor(key); err != nil {
		return nil, err
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = defaultMaxSize
	}
	if opts.MaxMembers <= 0 {
		opts.MaxMembers = defaultMaxMembers
	}
	if opts.Refresh <= 0 {
		opts.Refresh = defaultRefresh
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	w := &Watcher{url: listURL, key: key, opts: opts, log: opts.Logger, http: opts.HTTPClient}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.http == nil {
		w.http = &http.Client{Timeout: defaultTimeout}
	}
	w.loadCache()
	return w, nil
}

// Load fetches and verifies the list at listURL once, with opts.CacheFile as the last good
// list. It returns the list to use and, when the fetched list was refused or could not be
// had, the error saying why: then the list is the cached one (nil if there is none), which
// the caller may go on with.
func Load(ctx context.Context, listURL string, key crypto.PublicKey, opts Options) (*List, error) {
	w, err := NewWatcher(listURL, key, opts)
	if err != nil {
		return nil, err
	}
	err = w.Refresh(ctx)
	return w.Current(), err
}

// Current returns the list in use, or nil before the first good one.
func (w *Watcher) Current() *List {
	if w == nil {
		return nil // no watcher has no list: every lookup says no, ServerACL ErrNoList
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Stats returns the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Run refreshes the list now and then every Options.Refresh until ctx ends, and returns
// ctx's error. Failed refreshes are logged and counted; the last good list stays in use.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Refresh)
	defer t.Stop()
	for {
		_ = w.Refresh(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Refresh fetches the list once. A list that verifies, is valid now and has a higher version
// replaces the one in use (and the cache file); the same list again changes nothing. Any
// failure leaves the list in use as it is, is logged at WARN with the version kept, and is
// returned.
func (w *Watcher) Refresh(ctx context.Context) error {
	w.refreshMu.Lock()
	defer w.refreshMu.Unlock()
	old, changed, err := w.refresh(ctx)
	w.mu.Lock()
	w.stats.Refreshes++
	if err != nil {
		w.stats.Failures++
		w.stats.LastError = err.Error()
	} else {
		w.stats.LastSuccess = w.opts.Now()
	}
	cur := w.cur
	if cur != nil {
		w.stats.Version = cur.Version()
	}
	w.mu.Unlock()

	if err != nil {
		kept := uint64(0)
		if cur != nil {
			kept = cur.Version()
		}
		w.log.Warn("federation: list refused; keeping the last good list", "url", w.url, "reason", Reason(err), "kept_version", kept, "err", err)
	}
	if cur != nil && !w.opts.Now().Before(cur.ExpiresAt()) {
		w.log.Error("federation: the list in use has expired and no newer one could be had", "version", cur.Version(), "expired_at", cur.ExpiresAt())
	}
	if w.opts.OnRefresh != nil {
		w.opts.OnRefresh(err)
	}
	if changed {
		w.log.Info("federation: new list", "version", cur.Version(), "members", len(cur.doc.Members))
		if w.opts.OnChange != nil {
			w.opts.OnChange(ctx, old, cur)
		}
	}
	return err
}

func (w *Watcher) refresh(ctx context.Context) (old *List, changed bool, err error) {
	raw, err := w.fetch(ctx)
	if err != nil {
		return nil, false, err
	}
	l, err := Parse(raw, w.key, w.opts.Now(), w.opts.MaxMembers)
	if err != nil {
		return nil, false, err
	}
	old = w.Current()
	if old != nil {
		switch {
		case l.Version() < old.Version():
			return nil, false, fmt.Errorf("%w: got version %d, have %d", ErrOlderVersion, l.Version(), old.Version())
		case l.Version() == old.Version() && !bytes.Equal(l.raw, old.raw):
			return nil, false, fmt.Errorf("%w: version %d again with other content", ErrOlderVersion, l.Version())
		case l.Version() == old.Version():
			return old, false, nil
		}
	}
	if err := w.storeCache(l.raw); err != nil {
		// The list is good; not caching it only matters at the next start.
		w.log.Error("federation: cannot store the list in the cache file", "path", w.opts.CacheFile, "err", err)
	}
	w.mu.Lock()
	w.cur = l
	w.mu.Unlock()
	return old, true, nil
}

// fetch reads the document, refusing one over MaxSize without reading it all.
func (w *Watcher) fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return nil, &FetchError{URL: w.url, Err: err}
	}
	req.Header.Set("Accept", "application/jose")
	resp, err := w.http.Do(req)
	if err != nil {
		return nil, &FetchError{URL: w.url, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &FetchError{URL: w.url, Status: resp.StatusCode}
	}
	if resp.ContentLength > w.opts.MaxSize {
		return nil, fmt.Errorf("%w: %d bytes announced, at most %d", ErrTooLarge, resp.ContentLength, w.opts.MaxSize)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, w.opts.MaxSize+1))
	if err != nil {
		return nil, &FetchError{URL: w.url, Err: err}
	}
	if int64(len(raw)) > w.opts.MaxSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, w.opts.MaxSize)
	}
	return bytes.TrimSpace(raw), nil
}

// loadCache takes the cached list as the last good one if it still verifies. An expired
// cached list is still taken: it was good, it allows only members, and it is what there is
// until the list server answers; Refresh logs that it has expired.
func (w *Watcher) loadCache() {
	if w.opts.CacheFile == "" {
		return
	}
	f, err := os.Open(w.opts.CacheFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		w.log.Error("federation: cannot read the list cache", "path", w.opts.CacheFile, "err", err)
		return
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, w.opts.MaxSize+1))
	if err == nil && int64(len(raw)) > w.opts.MaxSize {
		err = ErrTooLarge
	}
	var l *List
	if err == nil {
		l, err = verify(bytes.TrimSpace(raw), w.key, w.opts.MaxMembers)
	}
	if err != nil {
		w.log.Error("federation: the cached list is not usable; waiting for the list server", "path", w.opts.CacheFile, "reason", Reason(err), "err", err)
		return
	}
	w.cur = l
	w.stats.Version = l.Version()
	w.log.Info("federation: using the cached list until the list server answers", "version", l.Version(), "expires_at", l.ExpiresAt())
}

// storeCache writes raw to the cache file, owner-only, atomically.
func (w *Watcher) storeCache(raw []byte) error {
	if w.opts.CacheFile == "" {
		return nil
	}
	dir := filepath.Dir(w.opts.CacheFile)
	tmp, err := os.CreateTemp(dir, ".federation-list-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), w.opts.CacheFile)
}

// The list in use, for the rest of samtal. Each answers "no" before the first good list.

// ServerACL is the ACL of the list in use, for matrix.Options.CaseRoomACL; ErrNoList before
// the first good list, so that no case room is created open.
func (w *Watcher) ServerACL() (*matrix.ServerACL, error) {
	l := w.Current()
	if l == nil {
		return nil, ErrNoList
	}
	return l.ServerACL(), nil
}

// Member is Current().Member.
func (w *Watcher) Member(emailDomain string) (Member, bool) { return w.Current().Member(emailDomain) }

// MemberByServer is Current().MemberByServer.
func (w *Watcher) MemberByServer(server string) (Member, bool) {
	return w.Current().MemberByServer(server)
}

// HasDomain is Current().HasDomain: for "senders from member domains only".
func (w *Watcher) HasDomain(emailDomain string) bool { return w.Current().HasDomain(emailDomain) }

// HasServer is Current().HasServer: for matrix.AutoJoinPolicy.AllowServer.
func (w *Watcher) HasServer(server string) bool { return w.Current().HasServer(server) }
