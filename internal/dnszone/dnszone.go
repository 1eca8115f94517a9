// Package dnszone is a small authoritative DNS server (github.com/miekg/dns) that answers TXT
// and address queries from records set on it and NXDOMAIN for every other name. A name can be
// made to fail (SERVFAIL), and the names asked are counted.
//
// It is the answering part of internal/dnstest, which starts one for a test, and of the load
// generator's -dns (internal/tools/mailload), which serves its sender domain to the gateway: it
// imports no testing.
package dnszone

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Zone is a DNS server that answers from the records set on it, over UDP and TCP on one port.
// Its methods are safe for concurrent use.
type Zone struct {
	// Addr is the server's host:port, for mailbridge.DNSServer or a config file.
	Addr string

	udp, tcp *dns.Server

	mu       sync.Mutex
	txt      map[string][]string
	a        map[string][]netip.Addr
	servfail map[string]bool
	asked    map[string]int // lookups by name, for tests that check nothing else was asked
}

// listenAttempts bounds the retries of Listen with port 0 when the UDP port it got is taken
// for TCP.
const listenAttempts = 5

// Listen starts a Zone with no records on addr (host:port; port 0 picks a free one), for UDP
// and TCP on the same port. Close stops it.
func Listen(addr string) (*Zone, error) {
	z := &Zone{txt: map[string][]string{}, a: map[string][]netip.Addr{}, servfail: map[string]bool{}, asked: map[string]int{}}
	pc, l, err := listenBoth(addr)
	if err != nil {
		return nil, fmt.Errorf("dnszone: %w", err)
	}
	z.Addr = pc.LocalAddr().String()
	z.udp = z.serve(&dns.Server{PacketConn: pc})
	z.tcp = z.serve(&dns.Server{Listener: l})
	return z, nil
}

// listenBoth binds addr for UDP and then the same port for TCP. With port 0, a UDP port whose
// TCP twin is taken is given up for another.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 1; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || attempt == listenAttempts {
			return nil, nil, err
		}
	}
}

// serve runs srv with the zone's handler and returns once it accepts queries.
func (z *Zone) serve(srv *dns.Server) *dns.Server {
	up := make(chan struct{})
	srv.Handler = dns.HandlerFunc(z.answer)
	srv.NotifyStartedFunc = func() { close(up) }
	failed := make(chan struct{})
	go func() {
		defer close(failed)
		_ = srv.ActivateAndServe()
	}()
	select {
	case <-up:
	case <-failed:
	}
	return srv
}

// Close stops the server.
func (z *Zone) Close() error {
	return errors.Join(z.udp.Shutdown(), z.tcp.Shutdown())
}

// TXT sets the TXT records of name (an SPF or DMARC record, a DKIM key).
func (z *Zone) TXT(name string, records ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.txt[key(name)] = records
}

// A sets the IPv4 and IPv6 addresses of name.
func (z *Zone) A(name string, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.a[key(name)] = addrs
}

// ServFail makes every lookup of name fail with SERVFAIL (a temporary error).
func (z *Zone) ServFail(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.servfail[key(name)] = true
}

// Heal undoes ServFail.
func (z *Zone) Heal(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.servfail, key(name))
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

func key(name string) string { return dns.Fqdn(strings.ToLower(name)) }

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
