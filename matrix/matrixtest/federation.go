package matrixtest

import (
	"testing"
)

// NewFederation starts n homeservers that federate with each other over HTTPS on loopback, as n
// agencies with a server each would. Their names are localhost:PORT, with PORT the federation
// listener's; they present self-signed certificates and skip TLS validation towards each other,
// and fetch each other's signing keys directly (no notary servers).
//
// Options apply to every server.
func NewFederation(tb testing.TB, n int, opts ...Option) []*Server {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("matrixtest: NewFederation needs at least one server, got %d", n)
	}
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = newServer(tb, true, opts)
	}
	return servers
}
