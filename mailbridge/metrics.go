package mailbridge

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Metrics receives the gateway's counts, for a monitoring system such as Prometheus (samtal
// gateway exports them on /metrics). Options.Metrics nil counts nothing: New sets it to a
// Metrics that discards, so the package's code calls g.opts.Metrics without a nil check. The
// methods are called from many goroutines at once and must not block.
type Metrics interface {
	// SMTPReply is called for every SMTP reply the gateway sends, with its code (220, 250,
	// 451, 550, ...).
	SMTPReply(code int)
	// Delivery is called when a delivery attempt of a mail into a room ends: outcome is
	// "delivered" (stored in the outbox), "retry" (failed, tried again later) or "dead"
	// (given up; see Undelivered).
	Delivery(outcome string)
	// DMARC is called once per received mail with the DMARC result ("pass", "fail", "none",
	// ...), when sender authentication checks it.
	DMARC(result string)
}

// Delivery outcomes given to Metrics.Delivery.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeDead      = "dead"
)

// noMetrics is Options.Metrics when none is set.
type noMetrics struct{}

func (noMetrics) SMTPReply(int)   {}
func (noMetrics) Delivery(string) {}
func (noMetrics) DMARC(string)    {}

// SpoolStats is the state of the spool: how much is waiting, and for how long.
type SpoolStats struct {
	Pending int       // deliveries not done yet (mail into a room), dead ones not counted
	Dead    int       // deliveries given up on, waiting for Retry
	Oldest  time.Time // when the oldest pending delivery's mail was received; zero if none
}

// SpoolStats reads the spool's depth and the age of its oldest pending mail. It also tells that
// the database answers, which is what a readiness check needs.
func (g *Gateway) SpoolStats(ctx context.Context) (SpoolStats, error) {
	var st SpoolStats
	var oldest *int64
	err := g.spool.db.QueryRow(ctx, `SELECT
			COALESCE(SUM(CASE WHEN d.state = 0 THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN d.state = 2 THEN 1 ELSE 0 END), 0),
			MIN(CASE WHEN d.state = 0 THEN m.received_at END)
		FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id WHERE d.state <> 1`).Scan(&st.Pending, &st.Dead, &oldest)
	if err != nil {
		return SpoolStats{}, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	if oldest != nil {
		st.Oldest = time.UnixMilli(*oldest)
	}
	return st, nil
}

// meteredListener counts the replies written on its connections by their code.
type meteredListener struct {
	net.Listener
	m Metrics
}

func (l meteredListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &meteredConn{Conn: c, m: l.m, start: true}, nil
}

// meteredConn finds the reply codes in what the server writes: a reply's last line starts
// with three digits and a space ("250 2.0.0 OK"); the lines before it have a dash there.
type meteredConn struct {
	net.Conn
	m     Metrics
	start bool    // the next byte begins a line
	head  [4]byte // the first bytes of the current line
	n     int     // how many of head are filled
}

func (c *meteredConn) Write(p []byte) (int, error) {
	for _, b := range p {
		if c.start {
			c.start, c.n = false, 0
		}
		if c.n < len(c.head) {
			c.head[c.n] = b
			c.n++
			if c.n == len(c.head) && c.head[3] == ' ' && isDigit(c.head[0]) && isDigit(c.head[1]) && isDigit(c.head[2]) {
				c.m.SMTPReply(int(c.head[0]-'0')*100 + int(c.head[1]-'0')*10 + int(c.head[2]-'0'))
			}
		}
		if b == '\n' {
			c.start = true
		}
	}
	return c.Conn.Write(p)
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
