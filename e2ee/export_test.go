package e2ee

// DisableMemberChecks turns off the member and device reads before sends of a client that does
// not sync, for the benchmark that measures what they cost.
func DisableMemberChecks(m *Machine) { m.noMemberChecks = true }
