package mailbridge

import "time"

// WorkerPasses is how many times the delivery worker has read the spool for due deliveries.
func WorkerPasses(g *Gateway) int64 { return g.passes.Load() }

// SetRetentionSweep makes the gateways a test starts sweep the spool for mail past its
// retention every d, until the test ends. Tests that call it do not run in parallel.
func SetRetentionSweep(t interface{ Cleanup(func()) }, d time.Duration) {
	old := retentionSweep
	retentionSweep = d
	t.Cleanup(func() { retentionSweep = old })
}
