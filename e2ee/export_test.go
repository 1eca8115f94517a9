package e2ee

// DisableMemberChecks turns off the member and device reads before sends of a client that does
// not sync, for the benchmark that measures what they cost.
func DisableMemberChecks(m *Machine) { m.noMemberChecks = true }

// CrossLockWaiting is how many callers wait for (or are taking) the lock that keeps Bootstrap,
// Recover and Status apart from sync processing.
func CrossLockWaiting(m *Machine) int { return int(m.crossMu.waiting.Load()) }
