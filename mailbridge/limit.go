package mailbridge

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

// tooManyConnections is the greeting a connection over Options.MaxConnections gets before it is
// closed: temporary, so the sender tries again later (RFC 5321 4.3.2, 421 at connection open).
const tooManyConnections = "421 4.7.0 Too many connections, try again later\r\n"

// limitListener hands at most max connections at a time to the SMTP server; the ones above
// that are answered 421 and closed at once, so that a flood cannot hold the gateway's memory.
type limitListener struct {
	net.Listener
	max  int64
	open *atomic.Int64 // shared by the Gateway's listeners
	m    Metrics       // told of each connection refused; nil tells nothing
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte(tooManyConnections))
			if l.m != nil {
				l.m.SMTPReply(421)
			}
			_ = c.Close()
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// countedConn gives its place back when it is closed, once.
type countedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// Replies of the smtp part's limits.
var (
	// ErrRateLimited: the sender has sent more than Options.SenderRate mails in the last
	// minute (450 4.7.1); it may try again later.
	ErrRateLimited = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Too many mails from this sender, try again later"}
	// ErrMIMETooComplex: the mail nests multiparts deeper than Options.MaxMIMEDepth or has
	// more than Options.MaxMIMEParts parts (552 5.3.4).
	ErrMIMETooComplex = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message structure too complex"}
	// ErrRelayDenied: the recipient's domain is not one the gateway routes; it relays nothing
	// (550 5.7.1).
	ErrRelayDenied = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
)

// rateLimiter allows each key (an envelope sender) a number of mails a minute: a token bucket
// per key that refills continuously, so a burst of the whole minute's mails is allowed and
// then one every minute/perMinute.
type rateLimiter struct {
	perMinute float64
	mu        sync.Mutex
	buckets   map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxRateKeys bounds the limiter's memory: past it, full buckets are forgotten, and if that is
// not enough, all.
const maxRateKeys = 100_000

// newRateLimiter returns a limiter for perMinute mails a minute, or nil (no limit) for <= 0.
func newRateLimiter(perMinute int) *rateLimiter {
	if perMinute <= 0 {
		return nil
	}
	return &rateLimiter{perMinute: float64(perMinute), buckets: map[string]*bucket{}}
}

// allow takes one mail from key's bucket, and reports false when it is empty.
func (l *rateLimiter) allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxRateKeys {
			l.sweep(now)
		}
		b = &bucket{tokens: l.perMinute, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.perMinute, b.tokens+now.Sub(b.at).Minutes()*l.perMinute)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the buckets that have refilled; they would start full anyway.
func (l *rateLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Minutes()*l.perMinute >= l.perMinute {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxRateKeys {
		clear(l.buckets)
	}
}

// checkMIME walks the MIME structure of a mail, without reading the parts' content, and
// returns ErrMIMETooComplex when it is deeper than maxDepth or has more than maxParts parts.
// A structure that cannot be read is left to the converter, which shows what it can.
func checkMIME(raw []byte, maxDepth, maxParts int) error {
	e, err := message.ReadWithOptions(bytes.NewReader(raw), &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if e == nil || err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil
	}
	parts := 1
	return walkMIME(e, 0, maxDepth, maxParts, &parts)
}

func walkMIME(e *message.Entity, depth, maxDepth, maxParts int, parts *int) error {
	if t, _, _ := e.Header.ContentType(); t == "message/rfc822" || t == "message/global" {
		// An attached mail counts as a level, and its parts as parts.
		if depth+1 > maxDepth {
			return ErrMIMETooComplex
		}
		inner, err := message.ReadWithOptions(e.Body, &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
		if inner == nil || err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return nil
		}
		return walkMIME(inner, depth+1, maxDepth, maxParts, parts)
	}
	mr := e.MultipartReader()
	if mr == nil {
		return nil
	}
	if depth+1 > maxDepth {
		return ErrMIMETooComplex
	}
	for {
		p, err := mr.NextPart()
		if p == nil || (err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
			return nil
		}
		*parts++
		if *parts > maxParts {
			return ErrMIMETooComplex
		}
		if err := walkMIME(p, depth+1, maxDepth, maxParts, parts); err != nil {
			return err
		}
	}
}
