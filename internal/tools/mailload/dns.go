package main

import (
	"github.com/samtalhq/samtal/internal/dnszone"
)

// serveDNS answers, on addr (UDP and TCP), for the sender domain of the load: its SPF record
// allows loopback and its DMARC record asks for rejection, so each mail costs the gateway what
// an aligned, authenticated sender costs (an SPF and a DMARC lookup, both passing). Every other
// name does not exist. The gateway is pointed at it with `samtal dev -dns`: the machine's own
// resolver is not part of what is measured (the sandbox's drops queries under concurrency,
// which Go's resolver waits 5 s for).
func serveDNS(addr, domain string) (stop func(), err error) {
	z, err := dnszone.Listen(addr)
	if err != nil {
		return nil, err
	}
	z.TXT(domain, "v=spf1 ip4:127.0.0.1 -all")
	z.TXT("_dmarc."+domain, "v=DMARC1; p=reject")
	return func() { _ = z.Close() }, nil
}
