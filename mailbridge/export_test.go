package mailbridge

// WorkerPasses is how many times the delivery worker has read the spool for due deliveries.
func WorkerPasses(g *Gateway) int64 { return g.passes.Load() }
