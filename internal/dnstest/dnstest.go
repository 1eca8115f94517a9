// Package dnstest runs a real DNS server on loopback for tests (internal/dnszone), which
// answers TXT and address queries from records the test sets and NXDOMAIN for every other
// name, so that SPF, DKIM and DMARC run against real DNS replies and no test asks the
// machine's resolver. A name can be made to fail (SERVFAIL), and the names asked are counted.
package dnstest

import (
	"testing"

	"github.com/samtalhq/samtal/internal/dnszone"
)

// Zone is a DNS server that answers from the records set on it (TXT, A, ServFail, Heal,
// Asked). Its methods are safe for concurrent use.
type Zone = dnszone.Zone

// Start starts a Zone on a free port of 127.0.0.1 (UDP and TCP); it stops when the test ends.
func Start(t testing.TB) *Zone {
	t.Helper()
	z, err := dnszone.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = z.Close() })
	return z
}
