package mailbridge_test

import (
	"testing"

	"github.com/samtalhq/samtal/internal/dnstest"
)

// dnsZone is internal/dnstest's loopback DNS server: the gateway's Resolver points at it, so
// SPF, DKIM and DMARC run against real DNS replies, and no test asks the machine's resolver.
type dnsZone = dnstest.Zone

// startDNS starts an authoritative server for whatever names the test sets; every other name
// gets NXDOMAIN. It stops when the test ends.
func startDNS(t *testing.T) *dnsZone { return dnstest.Start(t) }
