package mailbridge

import (
	"context"
	"fmt"
	"time"
)

// Metrics receives the gateway's counts, for a monitoring system such as Prometheus (samtal
// gateway exports them on /metrics). Options.Metrics nil counts nothing: New sets it to a
// Metrics that discards, so the package's code calls g.opts.Metrics without a nil check. The
// methods are called from many goroutines at once and must not block.
type Metrics interface {
	// SMTPReply is called for the gateway's answer to each MAIL, RCPT and DATA command, with
	// its code (250, 451, 550, ...), on plain and TLS connections alike, and with 421 for a
	// connection refused over Options.MaxConnections. go-smtp's own answers to malformed
	// commands are not counted.
	SMTPReply(code int)
	// Delivery is called when a delivery attempt of a mail into a room ends: outcome is
	// "delivered" (the outbox sent all it became), "retry" (failed, here or in the outbox;
	// tried again later) or "dead" (given up; see Undelivered). A mail taken from IMAP that a
	// route refuses is spooled dead for that room at once, and counted "dead" then.
	Delivery(outcome string)
	// DMARC is called once per received mail with the DMARC result ("pass", "fail", "none",
	// ...), when sender authentication checks it: over SMTP at DATA, and for mail taken from
	// IMAP that a route takes or refuses, once it is spooled.
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
	Pending int       // deliveries not done yet (mail into a room, posted ones not yet sent included), dead ones not counted
	Dead    int       // deliveries given up on, waiting for Retry
	Oldest  time.Time // when the oldest pending delivery's mail was received; zero if none
}

// SpoolStats reads the spool's depth and the age of its oldest pending mail. It also tells that
// the database answers, which is what a readiness check needs.
func (g *Gateway) SpoolStats(ctx context.Context) (SpoolStats, error) {
	var st SpoolStats
	var oldest *int64
	err := g.spool.db.QueryRow(ctx, `SELECT
			COALESCE(SUM(CASE WHEN d.state IN (0, 3) THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN d.state = 2 THEN 1 ELSE 0 END), 0),
			MIN(CASE WHEN d.state IN (0, 3) THEN m.received_at END)
		FROM samtal_mail_delivery d JOIN samtal_mail_spool m ON m.id = d.spool_id WHERE d.state IN (0, 2, 3)`).Scan(&st.Pending, &st.Dead, &oldest)
	if err != nil {
		return SpoolStats{}, fmt.Errorf("mailbridge: read spool: %w", err)
	}
	if oldest != nil {
		st.Oldest = time.UnixMilli(*oldest)
	}
	return st, nil
}
