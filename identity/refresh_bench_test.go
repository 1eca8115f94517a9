package identity_test

import (
	"slices"
	"testing"
	"time"

	"github.com/samtalhq/samtal/internal/oidctest"
)

// BenchmarkSendRefresh measures a Send (to the homeserver's acceptance) through the Transport
// with a good token, and one with a token the homeserver refuses, so that it pays a
// transparent refresh (the 401, a refresh at the OP with the lease and the rotation written
// to SQLite, and the request sent again). Each iteration does one of each on the same client,
// so that load that comes and goes falls on both alike; it reports both and the difference,
// the added latency of a refresh (refresh-added-ms, the median over the pairs).
func BenchmarkSendRefresh(b *testing.B) {
	quietOP(b)
	o := oidctest.Start(b)
	f := oidctest.StartFront(b, o)
	db := openDB(b)
	c, _ := oauthClient(b, f, db)
	if err := sendAndWait(b, c, "warm"); err != nil {
		b.Fatal(err)
	}
	var good, refreshed time.Duration
	var added []float64
	n := 0
	for b.Loop() {
		start := time.Now()
		if err := sendAndWait(b, c, "x"); err != nil {
			b.Fatal(err)
		}
		g := time.Since(start)
		f.ExpireAll()
		start = time.Now()
		if err := sendAndWait(b, c, "y"); err != nil {
			b.Fatal(err)
		}
		r := time.Since(start)
		good, refreshed = good+g, refreshed+r
		added = append(added, float64((r-g).Microseconds())/1000)
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(good), "good-ms/send")
	b.ReportMetric(ms(refreshed), "refreshed-ms/send")
	// The median pair: a pair that another process preempted counts once, not by how long.
	slices.Sort(added)
	b.ReportMetric(added[len(added)/2], "refresh-added-ms")
}
