package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// serveDNS answers, on addr (UDP and TCP), for the sender domain of the load: its SPF record
// allows loopback and its DMARC record asks for rejection, so each mail costs the gateway what
// an aligned, authenticated sender costs (an SPF and a DMARC lookup, both passing). Every other
// name does not exist. The gateway is pointed at it with `samtal dev -dns`: the machine's own
// resolver is not part of what is measured (the sandbox's drops queries under concurrency,
// which Go's resolver waits 5 s for).
func serveDNS(addr, domain string) (stop func(), err error) {
	domain = dns.Fqdn(strings.ToLower(domain))
	records := map[string]string{
		domain:             "v=spf1 ip4:127.0.0.1 -all",
		"_dmarc." + domain: "v=DMARC1; p=reject",
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		if len(req.Question) == 1 {
			q := req.Question[0]
			txt, ok := records[strings.ToLower(q.Name)]
			switch {
			case !ok:
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeTXT:
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: []string{txt}})
			}
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns: %w", err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: l, Handler: handler}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	return func() { _ = udp.Shutdown(); _ = tcp.Shutdown() }, nil
}
