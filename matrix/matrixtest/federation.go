package matrixtest

import (
	"fmt"
	"testing"
)

// NewFederation starts n homeservers that federate with each other over HTTPS on loopback, as n
// agencies with a server each would. Their names are localhost:PORT, with PORT the federation
// listener's; they present self-signed certificates and skip TLS validation towards each other,
// and fetch each other's signing keys directly (no notary servers). With DistinctHosts, the
// names are a.localhost:PORT, b.localhost:PORT, and so on.
//
// Options apply to every server.
func NewFederation(tb testing.TB, n int, opts ...Option) []*Server {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("matrixtest: NewFederation needs at least one server, got %d", n)
	}
	var probe config
	for _, o := range opts {
		o(&probe)
	}
	var proxy *hostsProxy
	if probe.distinctHosts {
		var err error
		if proxy, err = newHostsProxy(); err != nil {
			tb.Fatalf("matrixtest: federation proxy: %v", err)
		}
		// Registered before the servers, so it closes after they have stopped.
		tb.Cleanup(proxy.Close)
	}
	servers := make([]*Server, n)
	for i := range servers {
		o := opts
		if proxy != nil {
			host := hostName(i)
			o = append(o[:len(o):len(o)], func(c *config) {
				c.opts.HostName = host
				c.opts.Env = append(c.opts.Env, "HTTPS_PROXY="+proxy.URL(), "https_proxy="+proxy.URL(), "NO_PROXY=", "no_proxy=")
			})
		}
		servers[i] = newServer(tb, true, o)
	}
	return servers
}

// DistinctHosts gives the servers of a NewFederation host names of their own, a.localhost,
// b.localhost, ... (then s26.localhost ...), instead of all being localhost on different
// ports. Server ACLs match hosts without port, so a test of ACLs needs this. The servers
// reach each other through a loopback proxy the test runs (their HTTPS_PROXY); a test's own
// connections to a name use LoopbackAddr. It does nothing for NewServer.
func DistinctHosts() Option {
	return func(c *config) { c.distinctHosts = true }
}

func hostName(i int) string {
	if i < 26 {
		return string(rune('a'+i)) + ".localhost"
	}
	return fmt.Sprintf("s%d.localhost", i)
}
