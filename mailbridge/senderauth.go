package mailbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// Resolver is where every DNS lookup of the gateway goes (SPF, DKIM keys, DMARC records);
// *net.Resolver is one, and DNSServer makes one for a given server. Names are looked up only
// for sender authentication: never a link, image or other name from a mail's content.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// DNSServer returns a Resolver that asks only the DNS server at addr ("192.0.2.53:53"), over
// UDP and, for a reply too large for it, TCP. Names in /etc/hosts are still answered from
// there, as by every Go resolver.
func DNSServer(addr string) *net.Resolver {
	d := net.Dialer{Timeout: 5 * time.Second}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
}

// SenderPolicy is what a route does with mail whose sender fails DMARC (RFC 7489): the From
// address's domain publishes a policy, and neither an aligned SPF pass nor an aligned DKIM
// signature backs the mail. Whatever the policy, the result is written into the mail as an
// Authentication-Results header and shown in the room.
type SenderPolicy string

const (
	// SenderMark (also the zero value ""): the mail is accepted, and the room shows that its
	// sender could not be verified.
	SenderMark SenderPolicy = "mark"
	// SenderReject: the mail is refused with 550 5.7.1; when the check cannot be finished (a
	// DNS failure, dmarc=temperror) with 451 4.4.3, so the sender tries again.
	SenderReject SenderPolicy = "reject"
	// SenderAccept: the mail is accepted, and the result is recorded as overridden by local
	// policy, so the room shows no warning: for routes whose senders are known not to
	// authenticate (an old case system behind a trusted relay).
	SenderAccept SenderPolicy = "accept"
)

// Replies of sender authentication.
var (
	// ErrSenderForged: the route refuses mail whose sender fails DMARC (550 5.7.1).
	ErrSenderForged = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender authentication failed (DMARC)"}
	// ErrNotMember: a MembersOnly route refuses mail whose From is not an authenticated
	// address of a member agency of the federation (550 5.7.1).
	ErrNotMember = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender is not a verified member of the federation"}
	// ErrSenderUnverifiable: the route refuses unauthenticated mail and DNS could not tell
	// this time (451 4.4.3, try again later).
	ErrSenderUnverifiable = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3}, Message: "Sender authentication could not be completed, try again later"}
)

// checkSenderPolicies checks the SenderPolicy of every route.
func (r *Router) checkSenderPolicies() error {
	for i, c := range r.routes {
		switch c.route.SenderPolicy {
		case "", SenderMark, SenderReject, SenderAccept:
		default:
			return fmt.Errorf("%w: route %d (%s): SenderPolicy %q is not mark, reject or accept", ErrInvalidRoute, i+1, c.route.Address, c.route.SenderPolicy)
		}
	}
	return nil
}

// envelope is what the SMTP session knows of a mail's sender.
type envelope struct {
	ip      netip.Addr
	helo    string
	from    string // MAIL FROM, "" for <>
	user    string // authenticated submitter, or ""
	trusted bool   // the client is one of Options.TrustedRelays
	// authServID, for mail taken from IMAP, is the mailbox server's authserv-id
	// (IMAPOptions.TrustAuthServID): its top-most Authentication-Results' SPF result stands
	// for the SPF check there is no client IP for (imap_policy.go).
	authServID string
}

// verdict is the outcome of SPF, DKIM and DMARC for one mail.
type verdict struct {
	spf        authres.ResultValue
	spfReason  string
	spfDomain  string // the domain SPF checked: MAIL FROM's, or HELO's for <>
	helo       string // valid HELO domain, or ""
	dkim       []authres.DKIMResult
	dmarc      authres.ResultValue
	fromDomain string       // of the From header, "" when it has none or several
	policy     dmarc.Policy // what the From domain asks for
	// spfAlign and dkimAlign are the alignment modes of the From domain's DMARC record
	// (aspf, adkim): strict or relaxed; strict when its record could not be read (temperror,
	// permerror), "" when it has none.
	spfAlign, dkimAlign dmarc.AlignmentMode
	user                string
	overridden          bool // accepted by local policy although DMARC did not pass
}

// maxDNSLookups bounds the DKIM and DMARC lookups of one mail (SPF has its own limit of 10,
// RFC 7208), so that a mail with many signatures costs little.
const maxDNSLookups = 12

// authenticate runs SPF, DKIM and DMARC for a mail. DNS failures become temperror results,
// never an error: what to do with them is the route's policy.
func (g *Gateway) authenticate(ctx context.Context, env envelope, raw []byte, h message.Header) verdict {
	ctx, cancel := context.WithTimeout(ctx, g.opts.AuthTimeout)
	defer cancel()
	v := verdict{user: env.user}
	if validDomain(env.helo) {
		v.helo = strings.ToLower(env.helo)
	}
	lookups := &boundedTXT{ctx: ctx, r: g.opts.Resolver, left: maxDNSLookups}

	// SPF: the client's IP against the envelope sender's domain (HELO's for a bounce). Behind
	// a trusted relay the client is the relay, so its verdict is taken instead.
	_, v.spfDomain, _ = strings.Cut(strings.ToLower(env.from), "@")
	if env.from == "" {
		v.spfDomain = v.helo
	}
	switch {
	case env.trusted:
		v.spf, v.spfReason = upstreamSPF(h), "trusted-relay"
	case env.authServID != "":
		v.spf, v.spfDomain = serverSPF(h, env.authServID)
		if v.spf != authres.ResultNone {
			v.spfReason = "mailbox-server"
		}
	case !validDomain(v.spfDomain) || !env.ip.IsValid():
		v.spf = authres.ResultNone
	default:
		sender := env.from
		if sender == "" {
			sender = "postmaster@" + v.helo
		}
		res, _ := spf.CheckHostWithSender(net.IP(env.ip.Unmap().AsSlice()), v.helo, sender,
			spf.WithResolver(g.opts.Resolver), spf.WithContext(ctx))
		v.spf = authres.ResultValue(res)
	}

	// DKIM: every signature (up to 5), each with its own result.
	verifs, _ := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookups.lookup, MaxVerifications: 5})
	for _, vf := range verifs {
		r := authres.DKIMResult{Value: authres.ResultPass, Domain: domainOrEmpty(vf.Domain)}
		switch {
		case vf.Err == nil:
		case dkim.IsTempFail(vf.Err):
			r.Value = authres.ResultTempError
		case dkim.IsPermFail(vf.Err):
			r.Value = authres.ResultPermError
		default:
			r.Value = authres.ResultFail
		}
		v.dkim = append(v.dkim, r)
	}

	v.dmarc, v.fromDomain, v.policy, v.spfAlign, v.dkimAlign = g.dmarc(h, v, lookups)
	return v
}

// dmarc evaluates the From domain's DMARC policy against the SPF and DKIM results, and returns
// the result, the From domain, its policy and its record's SPF and DKIM alignment modes.
func (g *Gateway) dmarc(h message.Header, v verdict, lookups *boundedTXT) (result authres.ResultValue, from string, policy dmarc.Policy, spfAlign, dkimAlign dmarc.AlignmentMode) {
	const strict = dmarc.AlignmentStrict
	froms := h.Values("From")
	if len(froms) != 1 {
		return authres.ResultPermError, "", "", strict, strict // RFC 7489 6.6.1: not one From field
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		return authres.ResultPermError, "", "", strict, strict
	}
	_, from, _ = strings.Cut(strings.ToLower(list[0].Address), "@")
	if ascii, err := idna.Lookup.ToASCII(from); err == nil {
		from = ascii // an internationalized domain is looked up as its A-labels
	}
	if !validDomain(from) {
		return authres.ResultPermError, "", "", strict, strict
	}
	org := orgDomain(from)
	rec, err := dmarc.LookupWithOptions(from, &dmarc.LookupOptions{LookupTXT: lookups.lookup})
	if errors.Is(err, dmarc.ErrNoPolicy) && org != from {
		rec, err = dmarc.LookupWithOptions(org, &dmarc.LookupOptions{LookupTXT: lookups.lookup})
		if err == nil && rec.SubdomainPolicy != "" {
			policy = rec.SubdomainPolicy
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return authres.ResultNone, from, "", "", ""
	case dmarc.IsTempFail(err):
		return authres.ResultTempError, from, "", strict, strict
	case err != nil:
		return authres.ResultPermError, from, "", strict, strict
	}
	if policy == "" {
		policy = rec.Policy
	}
	spfAlign, dkimAlign = alignment(rec.SPFAlignment), alignment(rec.DKIMAlignment)
	if v.spf == authres.ResultPass && aligned(v.spfDomain, from, spfAlign) {
		return authres.ResultPass, from, policy, spfAlign, dkimAlign
	}
	for _, d := range v.dkim {
		if d.Value == authres.ResultPass && aligned(d.Domain, from, dkimAlign) {
			return authres.ResultPass, from, policy, spfAlign, dkimAlign
		}
	}
	return authres.ResultFail, from, policy, spfAlign, dkimAlign
}

// alignment is a DMARC record's alignment mode, relaxed when it names none (RFC 7489 6.3).
func alignment(mode dmarc.AlignmentMode) dmarc.AlignmentMode {
	if mode == "" {
		return dmarc.AlignmentRelaxed
	}
	return mode
}

// aligned reports whether an authenticated domain is aligned with the From domain (RFC 7489
// 3.1): the same name in strict mode, the same organizational domain in relaxed mode.
func aligned(domain, from string, mode dmarc.AlignmentMode) bool {
	if domain == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return domain == from
	}
	return orgDomain(domain) == orgDomain(from)
}

// orgDomain is the organizational domain (RFC 7489 3.2): one label below the public suffix.
func orgDomain(domain string) string {
	if org, err := publicsuffix.EffectiveTLDPlusOne(domain); err == nil {
		return org
	}
	return domain
}

// upstreamSPF is the SPF result in the top-most Authentication-Results field, as a trusted
// relay wrote it, or none.
func upstreamSPF(h message.Header) authres.ResultValue {
	top := h.Get("Authentication-Results")
	if top == "" {
		return authres.ResultNone
	}
	_, results, err := authres.Parse(top)
	if err != nil {
		return authres.ResultNone
	}
	for _, r := range results {
		if s, ok := r.(*authres.SPFResult); ok {
			switch s.Value {
			case authres.ResultPass, authres.ResultFail, authres.ResultSoftFail, authres.ResultNeutral, authres.ResultTempError, authres.ResultPermError:
				return s.Value
			}
		}
	}
	return authres.ResultNone
}

// boundedTXT looks up TXT records for DKIM and DMARC: only valid host names, at most left of
// them per mail, each within ctx. A refused name is "not found", so the check fails rather
// than asks.
type boundedTXT struct {
	ctx  context.Context
	r    Resolver
	left int32
}

func (b *boundedTXT) lookup(name string) ([]string, error) {
	if !validDomain(strings.TrimPrefix(name, "_")) || atomic.AddInt32(&b.left, -1) < 0 {
		return nil, &net.DNSError{Err: "name not looked up", Name: "", IsNotFound: true}
	}
	return b.r.LookupTXT(b.ctx, name)
}

// validDomain reports whether s is a host name that may be looked up: ASCII letters, digits,
// '-' and '_' in dot-separated labels of up to 63 bytes, at least two labels, at most 253
// bytes. IP literals and anything else are not.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func domainOrEmpty(s string) string {
	s = strings.ToLower(s)
	if validDomain(s) {
		return s
	}
	return ""
}
