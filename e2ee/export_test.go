package e2ee

// DisableMemberChecks turns off the member and device reads before sends of a client that does
// not sync, for the benchmark that measures what they cost.
func DisableMemberChecks(m *Machine) { m.noMemberChecks = true }

// CrossLockWaiting is how many callers wait for (or are taking) the lock that keeps Bootstrap,
// Recover and Status apart from sync processing.
func CrossLockWaiting(m *Machine) int { return int(m.crossMu.waiting.Load()) }

// HeldVerificationEvents is how many verification events of the other party m's verifier held
// until its own confirmation was sent.
func HeldVerificationEvents(m *Machine) int64 {
	v, err := m.verifier()
	if err != nil {
		return 0
	}
	return v.heldCount.Load()
}
