package mailbridge

import (
	"context"

	"github.com/emersion/go-message"
	"github.com/emersion/go-msgauth/authres"
)

// A route means the same whichever way its mail comes in. Mail a Poller takes from IMAP goes
// through the route's SenderPolicy (DMARC), AllowSenders and MembersOnly, in the order the
// SMTP server checks them at DATA. Where SMTP refuses the mail (550, or 451 when DNS could not
// tell), the poller spools it for that route's room as a dead letter with the reason (nobody is
// there to answer); `samtal gateway spool list` shows it and `spool retry` posts it (one
// that DNS deferred is checked again first, recheck.go). Where SMTP
// marks the mail, the room shows it marked the same way: the poller writes its verdict on top
// of the mail as the SMTP server does (Authentication-Results with Options.Domain), and the
// converter shows it.
//
// What the poller can and cannot verify. No SMTP session of ours saw the mail arrive, so there
// is no client IP and SPF cannot be checked here. The poller verifies DKIM signatures itself,
// and so DMARC by an aligned DKIM signature. For SPF it takes the result of the mailbox
// server's top-most Authentication-Results when that server is trusted
// (IMAPOptions.TrustAuthServID), and it counts that field's dmarc=pass, or an aligned DKIM
// pass, as a DMARC pass. Without a trusted authserv-id, mail whose domain passes DMARC only by
// SPF (no DKIM signature, or one broken on the way) reads dmarc=fail here, and a route with
// SenderPolicy reject dead-letters it.

// Reasons a delivery of a mail from IMAP is spooled dead by the route's SenderPolicy and
// MembersOnly, as SpooledMail.LastError shows them (AllowSenders' are in imap_sender.go).
const (
	reasonIMAPForged      = "sender authentication failed (DMARC fail) and the route's SenderPolicy is reject"
	reasonIMAPDMARCUnsure = "sender authentication could not be completed this time (DMARC temperror, DNS) and the route's SenderPolicy is reject: retry it once DNS answers, which checks it again"
	reasonIMAPNotMember   = "sender is not a verified member of the federation (the route is MembersOnly)"
)

// imapVerdict runs sender authentication for a mail taken from IMAP whose envelope sender (as
// the spool keeps it) is from: DKIM ourselves, SPF from the trusted mailbox server's (authServID)
// Authentication-Results, DMARC from both; and a DMARC pass when that server says the From
// domain passed there.
func (g *Gateway) imapVerdict(ctx context.Context, authServID, from string, raw []byte, h message.Header) (envelope, verdict) {
	env := envelope{from: from, authServID: authServID}
	v := g.authenticate(ctx, env, raw, h)
	if v.dmarc != authres.ResultPass && env.authServID != "" && v.fromDomain != "" && serverAuthenticated(h, env.authServID, v.fromDomain, v.spfAlign, v.dkimAlign) {
		v.dmarc = authres.ResultPass
	}
	return env, v
}

// imapPolicy is why the route of m refuses a mail with verdict v and proven senders ps, or ""
// when it takes it: its SenderPolicy, then its AllowSenders, then MembersOnly, as at DATA.
// postmaster@ mail is only ever marked, as over SMTP.
func (g *Gateway) imapPolicy(m Match, v verdict, ps provenSenders) string {
	if !m.postmaster && m.Route.SenderPolicy == SenderReject {
		switch v.dmarc {
		case authres.ResultFail:
			return reasonIMAPForged
		case authres.ResultTempError:
			return reasonIMAPDMARCUnsure
		}
	}
	if r := imapRefusal(m, ps); r != "" {
		return r
	}
	if m.Route.MembersOnly && !m.postmaster {
		fed := g.opts.Federation
		if v.dmarc != authres.ResultPass || fed == nil || !fed.HasDomain(v.fromDomain) {
			return reasonIMAPNotMember
		}
	}
	return ""
}

// overriddenFor reports whether a mail with DMARC result dmarc is accepted by local policy in
// every room it goes to: each route taking it has SenderPolicy accept (postmaster@ is marked).
// As over SMTP, the room then shows no warning.
func overriddenFor(matches []Match, dmarc authres.ResultValue) bool {
	if len(matches) == 0 {
		return false
	}
	for _, m := range matches {
		if m.postmaster || m.Route.SenderPolicy != SenderAccept {
			return false
		}
	}
	return dmarc == authres.ResultFail || dmarc == authres.ResultTempError || dmarc == authres.ResultPermError
}
