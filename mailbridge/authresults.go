package mailbridge

import (
	"bytes"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-msgauth/authres"
)

// AuthResults is the gateway's verdict on a mail's sender, as it wrote it into the mail's
// Authentication-Results header (RFC 8601) before spooling it. The converter shows it.
type AuthResults struct {
	SPF   string // "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"
	DKIM  string // "pass" when any signature passed, else the first signature's result, "none" without one
	DMARC string // "pass", "fail", "none" (no policy published), "temperror", "permerror"
	// From is the From header's domain that DMARC checked, "" when the mail has no single From.
	From string
	// Submitter is the authenticated SMTP user (AUTH) that sent the mail, or "".
	Submitter string
	// Overridden is set when the route accepts the mail by local policy (SenderAccept, or an
	// authenticated submitter with Options.TrustSubmitters) although DMARC did not pass: the
	// room need not warn.
	Overridden bool
}

// Verified reports whether the sender is authenticated: DMARC passed, or the mail came from
// an authenticated submitter.
func (a AuthResults) Verified() bool { return a.DMARC == "pass" || a.Submitter != "" }

// overrideReason marks a DMARC result overridden by local policy (RFC 7489's "local_policy").
// Reasons are single tokens: authres.Parse does not read quoted strings with spaces.
const overrideReason = "local-policy"

// untrustedAuthResults is the name untrusted Authentication-Results fields are renamed to,
// so that no sender can forge the gateway's.
const untrustedAuthResults = "X-Untrusted-Authentication-Results"

// ReadAuthResults returns the verdict in the top-most Authentication-Results field of h whose
// authserv-id is authservID (the gateway's Options.Domain), and false when there is none. The
// gateway writes that field on top of every mail it spools, and renames every such field it
// received from a client that is not a trusted relay, so that field is the gateway's own.
func ReadAuthResults(h message.Header, authservID string) (AuthResults, bool) {
	for _, v := range h.Values("Authentication-Results") {
		id, results, err := authres.Parse(stripComments(v)) // authres.Parse reads no (comments)
		if err != nil || !strings.EqualFold(strings.TrimSpace(id), authservID) {
			continue
		}
		a := AuthResults{SPF: "none", DKIM: "none", DMARC: "none"}
		dkimSeen := false
		for _, r := range results {
			switch r := r.(type) {
			case *authres.SPFResult:
				a.SPF = string(r.Value)
			case *authres.DKIMResult:
				if !dkimSeen || r.Value == authres.ResultPass {
					a.DKIM = string(r.Value)
				}
				dkimSeen = true
			case *authres.DMARCResult:
				a.DMARC, a.From = dmarcValue(r.Value), r.From
				a.Overridden = r.Reason == overrideReason
			case *authres.AuthResult:
				if r.Value == authres.ResultPass {
					a.Submitter = r.Auth
				}
			}
		}
		return a, true
	}
	return AuthResults{}, false
}

// results is v as ReadAuthResults reads it back from the field.
func (v verdict) results() AuthResults {
	a := AuthResults{SPF: string(v.spf), DKIM: "none", DMARC: string(v.dmarc), From: v.fromDomain, Submitter: token(v.user), Overridden: v.overridden}
	for i, d := range v.dkim {
		if i == 0 || d.Value == authres.ResultPass {
			a.DKIM = string(d.Value)
		}
	}
	return a
}

// authResultsField is the Authentication-Results field the gateway writes for v, folded, with
// its line end. Every value in it is a checked domain name or token, so a mail cannot put a
// line break or a field of its own into it.
func (g *Gateway) authResultsField(v verdict) string {
	var results []authres.Result
	if v.user != "" {
		results = append(results, &authres.AuthResult{Value: authres.ResultPass, Auth: token(v.user)})
	}
	results = append(results, &authres.SPFResult{Value: v.spf, Reason: v.spfReason, From: v.spfDomain, Helo: v.helo})
	if len(v.dkim) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for i := range v.dkim {
		results = append(results, &v.dkim[i])
	}
	d := &authres.DMARCResult{Value: v.dmarc, From: v.fromDomain}
	switch {
	case v.overridden:
		d.Reason = overrideReason
	case v.policy != "":
		d.Reason = "policy-" + token(string(v.policy)) // what the domain asks for
	}
	results = append(results, d)
	value := authres.Format(token(g.opts.Domain), results)
	return "Authentication-Results: " + foldResults(value) + "\r\n"
}

// foldResults puts each result of an Authentication-Results value on a line of its own,
// folding at the semicolons outside quoted strings.
func foldResults(value string) string {
	var b strings.Builder
	quoted := false
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case c == '"' && (i == 0 || value[i-1] != '\\'):
			quoted = !quoted
		case !quoted && c == ' ' && i+1 < len(value) && value[i+1] == ';':
			continue // authres.Format leaves a space before the next ';'
		case !quoted && c == ';' && i+1 < len(value) && value[i+1] == ' ':
			b.WriteString(";\r\n\t")
			i++
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// stamp returns the mail as it is spooled: Return-Path (the envelope sender, RFC 5321 4.4)
// and the gateway's Authentication-Results on top, and, from a client that is not a trusted
// relay (or, for mail taken from IMAP, without IMAPOptions.TrustAuthServID), every
// Authentication-Results field it sent renamed to X-Untrusted-Authentication-Results (RFC 8601
// 5).
func (g *Gateway) stamp(raw []byte, env envelope, v verdict) []byte {
	if !env.trusted && env.authServID == "" { // a trusted relay's, or a trusted mailbox server's (IMAP), are kept
		raw = renameFields(raw, "Authentication-Results", untrustedAuthResults)
	}
	var b bytes.Buffer
	b.Grow(len(raw) + 512)
	b.WriteString("Return-Path: <" + addressToken(env.from) + ">\r\n")
	b.WriteString(g.authResultsField(v))
	b.Write(raw)
	return b.Bytes()
}

// unstamped returns raw without the fields stamp put on top, so that the same mail received
// twice, with other results, is recognised as the same content.
func unstamped(raw []byte) []byte {
	rest := raw
	for _, name := range []string{"return-path:", "authentication-results:"} {
		if len(rest) < len(name) || !strings.EqualFold(string(rest[:len(name)]), name) {
			return raw
		}
		// the field and its folded continuation lines
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				return raw
			}
			rest = rest[i+1:]
			if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
				break
			}
		}
	}
	return rest
}

// renameFields renames the header fields called name (any case) in the header block of raw.
func renameFields(raw []byte, name, to string) []byte {
	end := headerSize(raw)
	var out []byte
	start := 0
	for pos := 0; pos < end; {
		lineEnd := bytes.IndexByte(raw[pos:end], '\n')
		next := end
		if lineEnd >= 0 {
			next = pos + lineEnd + 1
		}
		line := raw[pos:next]
		if isField(line, name) {
			out = append(out, raw[start:pos]...)
			out = append(out, to...)
			out = append(out, line[len(name):]...)
			start = next
		}
		pos = next
	}
	if out == nil {
		return raw
	}
	return append(out, raw[start:]...)
}

// isField reports whether line starts the header field called name (any case).
func isField(line []byte, name string) bool {
	if len(line) <= len(name) || !strings.EqualFold(string(line[:len(name)]), name) {
		return false
	}
	rest := strings.TrimLeft(string(line[len(name):]), " \t")
	return strings.HasPrefix(rest, ":")
}

// token keeps only the characters that need no quoting in a header parameter.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".-_+@", r):
			return r
		}
		return -1
	}, s)
}

// addressToken is an envelope address fit for a Return-Path field: no line breaks, no angle
// brackets.
func addressToken(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '<' || r == '>' {
			return -1
		}
		return r
	}, s)
}

// dmarcValue is v if it is a DMARC result RFC 7489 names, else "unknown": a trusted relay's
// header is shown in rooms, and an unheard-of word is not repeated there.
func dmarcValue(v authres.ResultValue) string {
	switch v {
	case authres.ResultPass, authres.ResultFail, authres.ResultNone, authres.ResultTempError, authres.ResultPermError:
		return string(v)
	}
	return "unknown"
}

// stripComments removes (comments) from a header value, as RFC 5322 allows them between
// tokens; a nested or unclosed one ends the value.
func stripComments(v string) string {
	var b strings.Builder
	depth := 0
	for _, r := range v {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}
