package mailbridge_test

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// dnsZone is a real DNS server on loopback (github.com/miekg/dns) that answers from records
// the test sets: the gateway's Resolver points at it, so SPF, DKIM and DMARC run against real
// DNS replies, and no test asks the machine's resolver.
type dnsZone struct {
	addr string

	mu       sync.Mutex
	txt      map[string][]string
	a        map[string][]netip.Addr
	servfail map[string]bool
	asked    map[string]int // lookups by name, for tests that check nothing else was asked
}

// startDNS starts an authoritative server for whatever names the test sets; every other name
// gets NXDOMAIN. It stops when the test ends.
func startDNS(t *testing.T) *dnsZone {
	t.Helper()
	z := &dnsZone{txt: map[string][]string{}, a: map[string][]netip.Addr{}, servfail: map[string]bool{}, asked: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve), NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return z
}

// TXT sets the TXT records of name.
func (z *dnsZone) TXT(name string, records ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.txt[dns.Fqdn(strings.ToLower(name))] = records
}

// A sets the addresses of name.
func (z *dnsZone) A(name string, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.a[dns.Fqdn(strings.ToLower(name))] = addrs
}

// ServFail makes every lookup of name fail with SERVFAIL (a temporary error).
func (z *dnsZone) ServFail(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.servfail[dns.Fqdn(strings.ToLower(name))] = true
}

// Heal undoes ServFail.
func (z *dnsZone) Heal(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.servfail, dns.Fqdn(strings.ToLower(name)))
}

// Asked returns every name looked up so far.
func (z *dnsZone) Asked() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var out []string
	for n := range z.asked {
		out = append(out, n)
	}
	return out
}

func (z *dnsZone) serve(w dns.ResponseWriter, req *dns.Msg) {
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
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	switch {
	case fail:
		m.Rcode = dns.RcodeServerFailure
	case !hasTXT && !hasA:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeTXT:
		for _, r := range txt {
			var parts []string // a TXT string holds at most 255 bytes
			for len(r) > 255 {
				parts, r = append(parts, r[:255]), r[255:]
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: append(parts, r)})
		}
	case q.Qtype == dns.TypeA:
		for _, a := range addrs {
			if a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IP(a.AsSlice())})
			}
		}
	case q.Qtype == dns.TypeAAAA:
		for _, a := range addrs {
			if a.Is6() {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IP(a.AsSlice())})
			}
		}
	}
	_ = w.WriteMsg(m)
}
