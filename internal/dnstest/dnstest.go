// Package dnstest runs a real DNS server on loopback for tests (github.com/miekg/dns), which
// answers TXT and address queries from records the test sets and NXDOMAIN for every other
// name, so that SPF, DKIM and DMARC run against real DNS replies and no test asks the
// machine's resolver. A name can be made to fail (SERVFAIL), and the names asked are counted.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Zone is a DNS server that answers from the records set on it. Its methods are safe for
// concurrent use.
type Zone struct {
	// Addr is the server's host:port, for mailbridge.DNSServer or a config file.
	Addr string

	mu       sync.Mutex
	txt      map[string][]string
	a        map[string][]netip.Addr
	servfail map[string]bool
	asked    map[string]int // lookups by name, for tests that check nothing else was asked
}

// Start starts a Zone on a free UDP port of 127.0.0.1; it stops when the test ends.
func Start(t testing.TB) *Zone {
	t.Helper()
	z := &Zone{txt: map[string][]string{}, a: map[string][]netip.Addr{}, servfail: map[string]bool{}, asked: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.Addr = pc.LocalAddr().String()
	up := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.answer), NotifyStartedFunc: func() { close(up) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-up
	t.Cleanup(func() { _ = srv.Shutdown() })
	return z
}

// TXT sets the TXT records of name (an SPF or DMARC record, a DKIM key).
func (z *Zone) TXT(name string, records ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.txt[dns.Fqdn(strings.ToLower(name))] = records
}

// A sets the IPv4 and IPv6 addresses of name.
func (z *Zone) A(name string, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.a[dns.Fqdn(strings.ToLower(name))] = addrs
}

// ServFail makes every lookup of name fail with SERVFAIL (a temporary error).
func (z *Zone) ServFail(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.servfail[dns.Fqdn(strings.ToLower(name))] = true
}

// Heal undoes ServFail.
func (z *Zone) Heal(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.servfail, dns.Fqdn(strings.ToLower(name)))
}

// Asked returns every name looked up so far, without the trailing dot.
func (z *Zone) Asked() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	out := make([]string, 0, len(z.asked))
	for n := range z.asked {
		out = append(out, n)
	}
	return out
}

func (z *Zone) answer(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	z.asked[strings.TrimSuffix(name, ".")]++
	txt, hasTXT := z.txt[name]
	addrs, hasA := z.a[name]
	fail := z.servfail[name]
	z.mu.Unlock()
	if fail {
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	}
	if !hasTXT && !hasA {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 60}
	switch q.Qtype {
	case dns.TypeTXT:
		for _, r := range txt {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: chunks(r)})
		}
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range addrs {
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
			}
		}
	}
	_ = w.WriteMsg(m)
}

// chunks splits a record into the strings of at most 255 bytes a TXT record is made of.
func chunks(r string) []string {
	var out []string
	for len(r) > 255 {
		out, r = append(out, r[:255]), r[255:]
	}
	return append(out, r)
}
