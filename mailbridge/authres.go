package mailbridge

import (
	"strings"

	"github.com/emersion/go-message/mail"
)

// dmarcResult returns the dmarc= result of the top-most Authentication-Results header whose
// authserv-id is authservID (RFC 8601), or "" when there is none. The gateway's sender
// authentication prepends that header before the mail is spooled; a header with the same
// authserv-id further down came with the mail and is not believed, nor is any other.
func dmarcResult(h mail.Header, authservID string) string {
	if authservID == "" {
		return ""
	}
	for _, v := range h.Values("Authentication-Results") {
		v = stripComments(v)
		id, rest, _ := strings.Cut(v, ";")
		fields := strings.Fields(id)
		if len(fields) == 0 || !strings.EqualFold(fields[0], authservID) {
			continue
		}
		for _, res := range strings.Split(rest, ";") {
			method, result, ok := strings.Cut(strings.TrimSpace(res), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(method), "dmarc") {
				continue
			}
			result = strings.ToLower(strings.TrimSpace(result))
			if i := strings.IndexAny(result, " \t\r\n"); i >= 0 {
				result = result[:i]
			}
			switch result {
			case "pass", "fail", "none", "temperror", "permerror":
				return result
			}
			return "unknown"
		}
		return "none" // our header, and no DMARC result in it
	}
	return ""
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
