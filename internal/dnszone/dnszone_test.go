package dnszone_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/samtalhq/samtal/internal/dnszone"
)

// TestAnswers: the zone answers the records set on it over UDP and TCP, NXDOMAIN for other
// names, SERVFAIL for a failed name until it is healed, and counts what was asked.
func TestAnswers(t *testing.T) {
	z, err := dnszone.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = z.Close() })
	long := strings.Repeat("k", 300) // more than one TXT string
	z.TXT("Example.org", "v=spf1 ip4:127.0.0.1 -all")
	z.TXT("sel._domainkey.example.org", long)
	z.A("mx.example.org", netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1"))

	ask := func(net, name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		r, _, err := (&dns.Client{Net: net}).Exchange(m, z.Addr)
		if err != nil {
			t.Fatalf("%s %s: %v", net, name, err)
		}
		return r
	}
	for _, network := range []string{"udp", "tcp"} {
		r := ask(network, "example.org", dns.TypeTXT)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != "v=spf1 ip4:127.0.0.1 -all" {
			t.Errorf("%s TXT example.org: %v", network, r)
		}
	}
	if r := ask("udp", "sel._domainkey.example.org", dns.TypeTXT); len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != long {
		t.Errorf("long TXT: %v", r)
	}
	if r := ask("udp", "mx.example.org", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Errorf("A: %v", r)
	}
	if r := ask("udp", "mx.example.org", dns.TypeAAAA); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
		t.Errorf("AAAA: %v", r)
	}
	if r := ask("udp", "other.example.org", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	z.ServFail("example.org")
	if r := ask("udp", "example.org", dns.TypeTXT); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("failed name: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	z.Heal("example.org")
	if r := ask("udp", "example.org", dns.TypeTXT); r.Rcode != dns.RcodeSuccess {
		t.Errorf("healed name: rcode %s", dns.RcodeToString[r.Rcode])
	}
	asked := z.Asked()
	slices.Sort(asked)
	want := []string{"example.org", "mx.example.org", "other.example.org", "sel._domainkey.example.org"}
	if !slices.Equal(asked, want) {
		t.Errorf("Asked() = %v, want %v", asked, want)
	}
}
