package mailbridge

import (
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-msgauth/authres"
)

// provenSenders are the sender addresses a mail has proven, which a route's AllowSenders is
// checked against: never the envelope sender or a From header as such, which anyone can write.
type provenSenders struct {
	addrs []string // the AUTH user (when it is an address), the From address when its domain is authenticated
	// unsure is the From address when its domain's check could not be finished this time
	// (dmarc=temperror): the mail is then deferred, not refused, on a route that lists it.
	unsure string
}

// proven works out who sent the mail, as far as it is proven:
//
//   - the SMTP AUTH user, when it is an address;
//   - the From address, when its domain passes DMARC, or publishes no DMARC record and has an
//     SPF pass or a DKIM signature aligned with it (relaxed, RFC 7489 3.1);
//   - the From address, when the client is a trusted relay whose top-most
//     Authentication-Results says dmarc=pass for that From domain.
//
// A From domain proves that the domain sent the mail; the local part is as the domain's own
// servers let it be written.
func proven(env envelope, v verdict, h message.Header) provenSenders {
	var p provenSenders
	if strings.Contains(env.user, "@") {
		p.addrs = append(p.addrs, strings.ToLower(env.user))
	}
	from := fromAddress(h, v.fromDomain)
	if from == "" {
		return p
	}
	switch {
	case v.dmarc == authres.ResultPass,
		v.dmarc == authres.ResultNone && alignedPass(v),
		env.trusted && upstreamDMARCPass(h, v.fromDomain):
		p.addrs = append(p.addrs, from)
	case v.dmarc == authres.ResultTempError:
		p.unsure = from
	}
	return p
}

// alignedPass reports whether an SPF pass or a DKIM pass is aligned with the From domain
// (relaxed), for a domain without a DMARC record to say how strict.
func alignedPass(v verdict) bool {
	if v.spf == authres.ResultPass && aligned(v.spfDomain, v.fromDomain, "") {
		return true
	}
	for _, d := range v.dkim {
		if d.Value == authres.ResultPass && aligned(d.Domain, v.fromDomain, "") {
			return true
		}
	}
	return false
}

// upstreamDMARCPass reports whether the top-most Authentication-Results, a trusted relay's,
// says the From domain passed DMARC there.
func upstreamDMARCPass(h message.Header, fromDomain string) bool {
	top := h.Get("Authentication-Results")
	if top == "" {
		return false
	}
	_, results, err := authres.Parse(top)
	if err != nil {
		return false
	}
	for _, r := range results {
		if d, ok := r.(*authres.DMARCResult); ok && d.Value == authres.ResultPass && strings.EqualFold(d.From, fromDomain) {
			return true
		}
	}
	return false
}

// fromAddress is the one address of the mail's From field, lower-cased, with its domain as
// sender authentication checked it (A-labels); "" when there is not exactly one.
func fromAddress(h message.Header, domain string) string {
	froms := h.Values("From")
	if len(froms) != 1 || domain == "" {
		return ""
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		return ""
	}
	local, _, ok := strings.Cut(list[0].Address, "@")
	if !ok || local == "" {
		return ""
	}
	return strings.ToLower(local) + "@" + domain
}

// checkAllowed refuses the mail when a route of its recipients has AllowSenders and none of
// the senders the mail proved is on it: 550 5.7.1 (ErrSenderNotAllowed), or 451 4.4.3
// (ErrSenderUnverifiable) when the From address is on it but its check could not be finished.
// As for SenderPolicy, one such route refuses the mail for all its recipients. An
// authenticated submitter with Options.TrustSubmitters passes.
func (s *session) checkAllowed(p provenSenders) error {
	if s.trustedSubmitter() {
		return nil
	}
	for _, m := range s.allowLists {
		allowed := false
		for _, a := range p.addrs {
			allowed = allowed || m.Allows(a)
		}
		switch {
		case allowed:
		case p.unsure != "" && m.Allows(p.unsure):
			return ErrSenderUnverifiable
		default:
			return ErrSenderNotAllowed
		}
	}
	return nil
}
