package main

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/mailbridge"
)

// gatewayMetrics is the gateway's Prometheus metrics: the counters are fed by mailbridge
// through mailbridge.Metrics, the spool gauges are read from the database at each scrape.
type gatewayMetrics struct {
	reg        *prometheus.Registry
	replies    *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	dmarc      *prometheus.CounterVec
}

func newGatewayMetrics() *gatewayMetrics {
	m := &gatewayMetrics{
		reg: prometheus.NewRegistry(),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "samtal_gateway_smtp_replies_total",
			Help: "SMTP replies sent, by reply code."}, []string{"code"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "samtal_gateway_deliveries_total",
			Help: "Delivery attempts of a mail into a room, by outcome (delivered, retry, dead)."}, []string{"outcome"}),
		dmarc: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "samtal_gateway_dmarc_results_total",
			Help: "DMARC results of received mail."}, []string{"result"}),
	}
	for _, o := range []string{mailbridge.OutcomeDelivered, mailbridge.OutcomeRetry, mailbridge.OutcomeDead} {
		m.deliveries.WithLabelValues(o) // present at 0 from the start
	}
	m.reg.MustRegister(m.replies, m.deliveries, m.dmarc,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *gatewayMetrics) SMTPReply(code int)      { m.replies.WithLabelValues(strconv.Itoa(code)).Inc() }
func (m *gatewayMetrics) Delivery(outcome string) { m.deliveries.WithLabelValues(outcome).Inc() }
func (m *gatewayMetrics) DMARC(result string)     { m.dmarc.WithLabelValues(result).Inc() }

// spoolCollector reads the spool's depth and oldest age when scraped.
type spoolCollector struct {
	gw                 *mailbridge.Gateway
	pending, dead, age *prometheus.Desc
	scrapeTimeout      time.Duration
}

func newSpoolCollector(gw *mailbridge.Gateway) *spoolCollector {
	return &spoolCollector{gw: gw, scrapeTimeout: 5 * time.Second,
		pending: prometheus.NewDesc("samtal_gateway_spool_pending", "Deliveries (a mail into a room) waiting in the spool.", nil, nil),
		dead:    prometheus.NewDesc("samtal_gateway_spool_dead", "Deliveries given up on (dead letters), waiting for 'samtal gateway spool retry'.", nil, nil),
		age:     prometheus.NewDesc("samtal_gateway_spool_oldest_age_seconds", "Age of the oldest pending delivery's mail; 0 when none waits.", nil, nil),
	}
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.dead
	ch <- c.age
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.scrapeTimeout)
	defer cancel()
	st, err := c.gw.SpoolStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.pending, err)
		return
	}
	age := 0.0
	if !st.Oldest.IsZero() {
		age = time.Since(st.Oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(st.Dead))
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
}

// federationCollector reads the federation.Watcher of federation.list_url when scraped: how
// often it fetched the list, how often that failed (a list refused or not fetched), when it
// last had a good list, and the version in use and when it expires. An alert on the last
// success's age or on the expiry catches a list server that stopped answering.
type federationCollector struct {
	w                                                 *federation.Watcher
	refreshes, failures, lastSuccess, version, expiry *prometheus.Desc
}

func newFederationCollector(w *federation.Watcher) *federationCollector {
	return &federationCollector{w: w,
		refreshes:   prometheus.NewDesc("samtal_gateway_federation_refreshes_total", "Fetches of the federation list (federation.list_url), good or not.", nil, nil),
		failures:    prometheus.NewDesc("samtal_gateway_federation_refresh_failures_total", "Fetches of the federation list that failed or whose list was refused; the last good list stays in use.", nil, nil),
		lastSuccess: prometheus.NewDesc("samtal_gateway_federation_last_success_timestamp_seconds", "When a fetch last ended with a good list (new or unchanged), Unix time; 0 before the first.", nil, nil),
		version:     prometheus.NewDesc("samtal_gateway_federation_list_version", "Version of the federation list in use; 0 when there is none.", nil, nil),
		expiry:      prometheus.NewDesc("samtal_gateway_federation_list_expiry_timestamp_seconds", "When the federation list in use expires, Unix time; 0 when there is none.", nil, nil),
	}
}

func (c *federationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.refreshes, c.failures, c.lastSuccess, c.version, c.expiry} {
		ch <- d
	}
}

func (c *federationCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Stats()
	last, expiry := 0.0, 0.0
	if !st.LastSuccess.IsZero() {
		last = float64(st.LastSuccess.UnixMilli()) / 1000
	}
	if l := c.w.Current(); l != nil {
		expiry = float64(l.ExpiresAt().Unix())
	}
	ch <- prometheus.MustNewConstMetric(c.refreshes, prometheus.CounterValue, float64(st.Refreshes))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(c.version, prometheus.GaugeValue, float64(st.Version))
	ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, expiry)
}
