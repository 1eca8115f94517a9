package main

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
