package mailbridge

import (
	"fmt"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// Route sends mail for one address, or for the addresses one pattern describes, into a room.
type Route struct {
	// Address is a mail address, such as "cases@agency.example", or a pattern whose local part
	// holds one capture in braces, such as "case-{id}@cases.example.se". A capture matches
	// 1 to 64 of the letters, digits, '.', '_', '=' and '-' that a room alias allows. A
	// route whose whole local part is a capture ("{user}@agency.example") is a catch-all for
	// its domain; there is none unless configured so. Matching ignores case and a
	// "+subaddress" in the recipient.
	Address string
	// Room is a room ID ("!abc:server") or an alias ("#cases:server"), which may use the
	// capture ("#case-{id}:server").
	Room string
	// Create, when set, is the template from which a missing alias room is created with
	// Client.EnsureRoom: its members (Invite), PowerLevels, Encrypted and Space are used as
	// they are, and the capture in its Name, Topic and CaseID is filled in ("Case {id}"); a
	// CaseRoom without a CaseID gets the capture as its case. Without it an alias must exist;
	// mail for one that does not waits in the spool.
	Create *matrix.RoomSpec
	// AllowSenders limits who may mail this route: full addresses ("system@agency.example")
	// or domains ("@agency.example"). Empty allows everyone. Over SMTP it is checked at DATA
	// against the senders the mail proves, never the envelope sender or a From header as
	// such: the SMTP AUTH user (when it is an address), and the From address when its domain
	// passes DMARC, or has no DMARC record and an aligned SPF or DKIM pass, or a trusted
	// relay's Authentication-Results says dmarc=pass for it. Others get 550 5.7.1
	// (ErrSenderNotAllowed), or 451 4.4.3 (ErrSenderUnverifiable) when the From address is
	// listed but DNS could not tell this time. A domain proves the domain; the local part is
	// as its own servers let it be written. Mail a Poller takes from IMAP proves its From
	// address as imap_sender.go says; a refused one is spooled as a dead letter.
	AllowSenders []string
	// SenderPolicy is what the route does with mail whose sender fails DMARC: SenderMark
	// (the default, ""), SenderReject or SenderAccept. See senderauth.go (issue 10, smtp). It
	// holds for mail from IMAP too, where a refused mail is spooled as a dead letter
	// (imap_policy.go).
	SenderPolicy SenderPolicy
	// MembersOnly takes mail only from the agencies of the federation (Options.Federation):
	// the From domain must pass DMARC and be an email domain of a member, else 550 5.7.1
	// (ErrNotMember). Without Options.Federation such a route takes no mail at all. Mail
	// from IMAP that it refuses is spooled as a dead letter.
	MembersOnly bool
}

// Match is where one recipient's mail goes.
type Match struct {
	Recipient  string // the address as the sender wrote it
	Route      *Route // the route that matched
	Room       string // Route.Room with the capture filled in
	Subaddress string // what followed '+' in the local part, if anything
	Capture    string // what the route's capture matched, lower-cased ("4711"); "" for a static route

	token string // the capture as written in the route, "{id}"

	postmaster bool // postmaster@ routed to its domain's first route: open to every sender
}

// Router finds the route for a recipient address. It is safe for concurrent use.
type Router struct {
	routes []compiledRoute
	// postmaster maps a routed domain to the route that receives its postmaster@ mail.
	postmaster map[string]int
}

type compiledRoute struct {
	route   Route
	literal string         // lower-cased address, for routes without a capture
	pattern *regexp.Regexp // for routes with a capture
	token   string         // the capture, "{id}"
}

// captureChars is what a capture may match: the characters of a room alias's localpart that
// are also safe in a mail local part.
const captureChars = `[a-z0-9._=-]{1,64}`

var captureRe = regexp.MustCompile(`\{[a-z][a-z0-9_]*\}`)

// NewRouter checks routes and returns a Router that tries them in order.
//
// postmaster@ of every domain that has a route is always accepted (RFC 5321 asks for it): it
// goes to a route for that address if there is one, else to the first route of the domain
// whose room has no capture. A domain with only pattern routes needs an explicit postmaster
// route.
func NewRouter(routes ...Route) (*Router, error) {
	r := &Router{postmaster: map[string]int{}}
	for i, rt := range routes {
		c, err := compile(rt)
		if err != nil {
			return nil, fmt.Errorf("%w: route %d (%s): %v", ErrInvalidRoute, i+1, rt.Address, err)
		}
		r.routes = append(r.routes, c)
	}
	domains := map[string]bool{}
	for i, c := range r.routes {
		_, domain, _ := strings.Cut(strings.ToLower(c.route.Address), "@")
		domains[domain] = true
		if _, ok := r.postmaster[domain]; ok {
			continue
		}
		if c.literal == "postmaster@"+domain || (c.pattern == nil && !strings.Contains(c.route.Room, "{")) {
			r.postmaster[domain] = i
		}
	}
	// An explicit postmaster route wins over the first static one.
	for i, c := range r.routes {
		if _, domain, _ := strings.Cut(c.literal, "@"); c.literal == "postmaster@"+domain {
			r.postmaster[domain] = i
		}
	}
	for d := range domains {
		if _, ok := r.postmaster[d]; !ok {
			return nil, fmt.Errorf("%w: domain %s has only pattern routes; add a route for postmaster@%s", ErrInvalidRoute, d, d)
		}
	}
	return r, nil
}

func compile(rt Route) (compiledRoute, error) {
	addr := strings.ToLower(strings.TrimSpace(rt.Address))
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || strings.ContainsAny(addr, " \t<>\"\\") {
		return compiledRoute{}, fmt.Errorf("address must be local@domain")
	}
	if strings.Contains(domain, "{") {
		return compiledRoute{}, fmt.Errorf("a capture may only be in the local part")
	}
	if strings.Contains(local, "+") {
		return compiledRoute{}, fmt.Errorf("the local part must not contain '+': subaddresses match their base address")
	}
	captures := captureRe.FindAllString(local, -1)
	if len(captures) > 1 {
		return compiledRoute{}, fmt.Errorf("at most one capture per address")
	}
	if strings.Count(local, "{") != len(captures) || strings.Count(local, "}") != len(captures) {
		return compiledRoute{}, fmt.Errorf("a capture is a lower-case name in braces, such as {id}")
	}
	room := strings.TrimSpace(rt.Room)
	switch {
	case strings.HasPrefix(room, "!"):
		if strings.Contains(room, "{") {
			return compiledRoute{}, fmt.Errorf("a room ID cannot use a capture; use an alias")
		}
	case strings.HasPrefix(room, "#"):
	default:
		return compiledRoute{}, fmt.Errorf("room %q must be a room ID (!...) or an alias (#...)", room)
	}
	roomCaptures := captureRe.FindAllString(room, -1)
	for _, c := range roomCaptures {
		if len(captures) == 0 || c != captures[0] {
			return compiledRoute{}, fmt.Errorf("room uses %s, which the address does not capture", c)
		}
	}
	if rt.Create != nil && !strings.HasPrefix(room, "#") {
		return compiledRoute{}, fmt.Errorf("a room template (Create) needs an alias room (#...)")
	}
	rt.Room = room
	c := compiledRoute{route: rt}
	for _, a := range rt.AllowSenders {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "" || !strings.Contains(a, "@") {
			return compiledRoute{}, fmt.Errorf("allowed sender %q must be an address or @domain", a)
		}
	}
	if len(captures) == 0 {
		c.literal = addr
		return c, nil
	}
	c.token = captures[0]
	pre, post, _ := strings.Cut(local, captures[0])
	c.pattern = regexp.MustCompile("^" + regexp.QuoteMeta(pre) + "(" + captureChars + ")" + regexp.QuoteMeta(post) + "@" + regexp.QuoteMeta(domain) + "$")
	return c, nil
}

// Match returns where mail for recipient goes, or an error wrapping ErrUnknownRecipient.
func (r *Router) Match(recipient string) (Match, error) {
	local, domain, ok := splitAddress(recipient)
	if !ok {
		return Match{}, fmt.Errorf("recipient %q: %w", recipient, ErrUnknownRecipient)
	}
	base, sub, _ := strings.Cut(local, "+")
	addr := base + "@" + domain
	for i := range r.routes {
		c := &r.routes[i]
		if c.literal != "" {
			if c.literal == addr {
				return Match{Recipient: recipient, Route: &c.route, Room: c.route.Room, Subaddress: sub}, nil
			}
			continue
		}
		if m := c.pattern.FindStringSubmatch(addr); m != nil {
			room := captureRe.ReplaceAllLiteralString(c.route.Room, m[1])
			return Match{Recipient: recipient, Route: &c.route, Room: room, Subaddress: sub, Capture: m[1], token: c.token}, nil
		}
	}
	if base == "postmaster" {
		if i, ok := r.postmaster[domain]; ok {
			c := &r.routes[i]
			return Match{Recipient: recipient, Route: &c.route, Room: c.route.Room, Subaddress: sub, postmaster: true}, nil
		}
	}
	return Match{}, fmt.Errorf("recipient %q: %w", recipient, ErrUnknownRecipient)
}

// Allows reports whether sender is on the match's route's allow-list (AllowSenders): the
// address, or its domain. It checks only the list, not who sent the mail: the Gateway asks it
// for the senders a mail has proven (see Route.AllowSenders). An empty sender passes only
// routes without an allow-list. postmaster@ mail that goes to its domain's first route passes
// whatever that route's allow-list says, since postmaster must reach someone.
func (m Match) Allows(sender string) bool {
	if m.Route == nil || len(m.Route.AllowSenders) == 0 || m.postmaster {
		return true
	}
	local, domain, ok := splitAddress(sender)
	if !ok {
		return false
	}
	addr := local + "@" + domain
	for _, a := range m.Route.AllowSenders {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == addr || (strings.HasPrefix(a, "@") && a[1:] == domain) {
			return true
		}
	}
	return false
}

// qualifyPostmaster turns the bare "Postmaster" of RCPT TO:<Postmaster>, which RFC 5321
// 4.1.1.3 and 4.5.1 ask every server to accept, into postmaster@ of the first route's domain;
// any other recipient is returned as it is.
func (r *Router) qualifyPostmaster(to string) string {
	if !strings.EqualFold(to, "postmaster") || len(r.routes) == 0 {
		return to
	}
	_, domain, _ := strings.Cut(strings.ToLower(r.routes[0].route.Address), "@")
	return "postmaster@" + domain
}

// splitAddress lower-cases addr and splits it at its last '@'.
func splitAddress(addr string) (local, domain string, ok bool) {
	addr = strings.ToLower(strings.TrimSpace(addr))
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 || len(addr) > 320 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// Spec returns the route's room template with the capture filled in, or nil when the route
// creates no rooms.
func (m Match) Spec() *matrix.RoomSpec {
	if m.Route == nil || m.Route.Create == nil {
		return nil
	}
	spec := *m.Route.Create
	spec.Invite = append([]id.UserID(nil), spec.Invite...)
	if spec.PowerLevels != nil {
		levels := make(map[id.UserID]matrix.PowerLevel, len(spec.PowerLevels))
		for u, l := range spec.PowerLevels {
			levels[u] = l
		}
		spec.PowerLevels = levels
	}
	if m.token != "" {
		spec.Name = strings.ReplaceAll(spec.Name, m.token, m.Capture)
		spec.Topic = strings.ReplaceAll(spec.Topic, m.token, m.Capture)
		spec.CaseID = strings.ReplaceAll(spec.CaseID, m.token, m.Capture)
		if spec.Preset == matrix.CaseRoom && spec.CaseID == "" {
			spec.CaseID = m.Capture
		}
	}
	return &spec
}
