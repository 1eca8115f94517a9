package mailbridge

import (
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
)

// Who sent a mail taken from IMAP. No SMTP session of ours saw it arrive: the mailbox's own
// server did the receiving, so there is no client IP for SPF, and the Return-Path and From are
// only what the sender wrote. A route's AllowSenders counts the From address of such a mail
// as proven only when
//
//   - the mailbox server's own top-most Authentication-Results field, named by
//     IMAPOptions.TrustAuthServID, says dmarc=pass for the From domain, or an SPF or DKIM
//     pass aligned with it as the From domain's DMARC record asks (aspf, adkim: relaxed
//     without a record, strict when the record could not be read); or
//   - a DKIM signature we verify ourselves is aligned with the From domain (DMARC pass, or no
//     DMARC record and an aligned DKIM pass, as for SMTP).
//
// The first is also what the poller's DMARC verdict takes from the mailbox server
// (imapVerdict), so AllowSenders, SenderPolicy and MembersOnly read one verdict. A mail whose
// sender is not proven, or not on the list, is spooled as a dead letter for that room with the
// reason, where `samtal gateway spool list` shows it; an admin who knows the
// sender can retry it, which posts it. It is neither flagged nor moved in the mailbox.

// Reasons a delivery of a mail from IMAP is spooled dead, as SpooledMail.LastError shows them.
const (
	reasonIMAPUnproven     = "sender not proven: no trusted Authentication-Results and no verified DKIM signature aligned with From (the route has AllowSenders)"
	reasonIMAPNotAllowed   = "sender not allowed: the proven sender is not on the route's AllowSenders"
	reasonIMAPUnverifiable = "sender could not be verified this time (DNS): retry it once DNS answers, which checks it again"
)

// serverAuthenticated reports whether the top-most Authentication-Results field carries
// authServID and says the From domain passed there: dmarc=pass for it, or an SPF or DKIM pass
// of a domain aligned with it in the mode the From domain's DMARC record asks for (spfAlign,
// dkimAlign; "" is relaxed). Only the top-most field counts: a field of that name further down
// can be the sender's own, written before the mailbox server added its.
func serverAuthenticated(h message.Header, authServID, fromDomain string, spfAlign, dkimAlign dmarc.AlignmentMode) bool {
	results, ok := serverResults(h, authServID)
	if !ok {
		return false
	}
	for _, r := range results {
		switch r := r.(type) {
		case *authres.DMARCResult:
			if r.Value == authres.ResultPass && strings.EqualFold(r.From, fromDomain) {
				return true
			}
		case *authres.DKIMResult:
			if r.Value == authres.ResultPass && aligned(strings.ToLower(r.Domain), fromDomain, dkimAlign) {
				return true
			}
		case *authres.SPFResult:
			_, domain, _ := strings.Cut(strings.ToLower(r.From), "@")
			if domain == "" {
				domain = strings.ToLower(r.From)
			}
			if r.Value == authres.ResultPass && aligned(domain, fromDomain, spfAlign) {
				return true
			}
		}
	}
	return false
}

// serverResults are the results of the top-most Authentication-Results field when it carries
// authServID, and false when it does not (or there is none). Comments are taken out first:
// servers write them ("dmarc=pass (p=reject dis=none)"), and authres.Parse reads none.
func serverResults(h message.Header, authServID string) ([]authres.Result, bool) {
	top := h.Get("Authentication-Results")
	if top == "" || authServID == "" {
		return nil, false
	}
	id, results, err := authres.Parse(stripComments(top))
	if err != nil || !strings.EqualFold(strings.TrimSpace(id), authServID) {
		return nil, false
	}
	return results, true
}

// serverSPF is the SPF result the mailbox server's top-most Authentication-Results (with
// authServID) records, and the domain it checked (of smtp.mailfrom, else smtp.helo); none
// when there is no such field or it has no SPF result. It stands for the SPF check the poller
// cannot make (imap_policy.go).
func serverSPF(h message.Header, authServID string) (authres.ResultValue, string) {
	results, _ := serverResults(h, authServID)
	for _, r := range results {
		s, ok := r.(*authres.SPFResult)
		if !ok {
			continue
		}
		switch s.Value {
		case authres.ResultPass, authres.ResultFail, authres.ResultSoftFail, authres.ResultNeutral, authres.ResultTempError, authres.ResultPermError:
		default:
			return authres.ResultNone, ""
		}
		domain := strings.ToLower(s.From)
		if _, d, ok := strings.Cut(domain, "@"); ok {
			domain = d
		}
		if domain == "" {
			domain = strings.ToLower(s.Helo)
		}
		return s.Value, domainOrEmpty(domain)
	}
	return authres.ResultNone, ""
}

// imapRefusal is why the route of m refuses the mail with proven senders ps, or "" when it
// takes it.
func imapRefusal(m Match, ps provenSenders) string {
	if m.Allows("") {
		return "" // no allow-list (or postmaster@)
	}
	for _, a := range ps.addrs {
		if m.Allows(a) {
			return ""
		}
	}
	switch {
	case ps.unsure != "" && m.Allows(ps.unsure):
		return reasonIMAPUnverifiable
	case len(ps.addrs) == 0:
		return reasonIMAPUnproven
	}
	return reasonIMAPNotAllowed
}
