package federation

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// ManagedBy marks the server ACLs made from the list (matrix.ServerACL.ManagedBy): the
// Reconciler keeps those, and only those, current.
const ManagedBy = "io.samtal.federation"

// Limits on one member, beside Options.MaxMembers.
const (
	maxServersPerMember = 20
	maxDomainsPerMember = 100
	maxText             = 200
)

// Document is the list as its publisher writes it: the JSON that Sign signs.
type Document struct {
	Version   uint64    `json:"version"`    // goes up with every new list; 1 or more
	IssuedAt  time.Time `json:"issued_at"`  // when the list was signed
	ExpiresAt time.Time `json:"expires_at"` // after this the list is refused
	Members   []Member  `json:"members"`
}

// Member is one agency of the federation.
type Member struct {
	Name         string   `json:"name"`          // the agency's name, such as "Skatteverket"
	OrgNumber    string   `json:"org_number"`    // its organisation number
	Servers      []string `json:"servers"`       // its homeservers' names, such as "matrix.skatteverket.se"; the first is where its users are
	EmailDomains []string `json:"email_domains"` // its mail domains, such as "skatteverket.se"
	// Localpart is the rule that turns an email address of one of EmailDomains into the
	// localpart of the user's Matrix ID: a template in which "{local}" stands for the
	// address's local part, lower-cased, and "{domain}" for its domain, such as "{local}" (the
	// default when empty), "ext.{local}" or, as Tchap does, "{local}-{domain}".
	Localpart string `json:"localpart,omitempty"`
	Contact   string `json:"contact"` // whom to call about its server, such as "matrix-drift@skatteverket.se"
}

// List is a verified federation list. It does not change; a newer list is a new List.
type List struct {
	doc      Document
	raw      []byte // the signed document it was read from
	byDomain map[string]int
	byServer map[string]int
}

// Version is the list's version.
func (l *List) Version() uint64 { return l.doc.Version }

// IssuedAt is when the list was signed.
func (l *List) IssuedAt() time.Time { return l.doc.IssuedAt }

// ExpiresAt is when the list expires.
func (l *List) ExpiresAt() time.Time { return l.doc.ExpiresAt }

// Members returns a copy of the members, in the list's order.
func (l *List) Members() []Member {
	out := make([]Member, len(l.doc.Members))
	for i, m := range l.doc.Members {
		out[i] = m.clone()
	}
	return out
}

// Member returns the member that owns emailDomain (case-insensitive, such as
// "skatteverket.se"): the identity directory's domain resolver asks this to find the server
// and the localpart rule for an address.
func (l *List) Member(emailDomain string) (Member, bool) {
	if l == nil {
		return Member{}, false
	}
	i, ok := l.byDomain[strings.ToLower(emailDomain)]
	if !ok {
		return Member{}, false
	}
	return l.doc.Members[i].clone(), true
}

// MemberByServer returns the member that runs the homeserver named server (as in user IDs,
// with its port if it has one).
func (l *List) MemberByServer(server string) (Member, bool) {
	if l == nil {
		return Member{}, false
	}
	i, ok := l.byServer[strings.ToLower(server)]
	if !ok {
		return Member{}, false
	}
	return l.doc.Members[i].clone(), true
}

// HasDomain reports whether emailDomain belongs to a member: the mail gateway's "senders
// from member domains only".
func (l *List) HasDomain(emailDomain string) bool {
	_, ok := l.Member(emailDomain)
	return ok
}

// HasServer reports whether server is a member's homeserver: for AutoJoinPolicy.AllowServer.
func (l *List) HasServer(server string) bool {
	_, ok := l.MemberByServer(server)
	return ok
}

// ServerNames returns every member's server names, sorted.
func (l *List) ServerNames() []string {
	var out []string
	for _, m := range l.doc.Members {
		out = append(out, m.Servers...)
	}
	slices.Sort(out)
	return out
}

// ServerACL is the ACL for a room open to members only: allow is the members' hosts (an ACL
// matches hosts without port), IP literals refused, marked as ManagedBy.
func (l *List) ServerACL() *matrix.ServerACL {
	var hosts []string
	for _, s := range l.ServerNames() {
		hosts = append(hosts, hostOf(s))
	}
	slices.Sort(hosts)
	return &matrix.ServerACL{Allow: slices.Compact(hosts), ManagedBy: ManagedBy}
}

// UserID maps email, an address of one of m's domains, to a Matrix ID on m's first server by
// m's localpart rule.
func (m Member) UserID(email string) (id.UserID, error) {
	local, domain, ok := strings.Cut(strings.ToLower(strings.TrimSpace(email)), "@")
	if !ok || local == "" || !slices.Contains(m.EmailDomains, domain) || len(m.Servers) == 0 {
		return "", fmt.Errorf("%w: %q is not an address of %s", ErrInvalidAddress, email, m.Name)
	}
	rule := m.Localpart
	if rule == "" {
		rule = "{local}"
	}
	localpart := strings.NewReplacer("{local}", local, "{domain}", domain).Replace(rule)
	if !validLocalpart(localpart) {
		return "", fmt.Errorf("%w: %q gives the localpart %q, which Matrix does not allow", ErrInvalidAddress, email, localpart)
	}
	return id.NewUserID(localpart, m.Servers[0]), nil
}

func (m Member) clone() Member {
	m.Servers = slices.Clone(m.Servers)
	m.EmailDomains = slices.Clone(m.EmailDomains)
	return m
}

// parseDocument reads and checks the signed payload: structure, names, limits, uniqueness.
func parseDocument(payload []byte, maxMembers int) (*List, error) {
	var doc Document
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidList, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the document", ErrInvalidList)
	}
	if len(doc.Members) > maxMembers {
		return nil, fmt.Errorf("%w: %d members, at most %d", ErrTooLarge, len(doc.Members), maxMembers)
	}
	if err := doc.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidList, err)
	}
	l := &List{doc: doc, byDomain: map[string]int{}, byServer: map[string]int{}}
	for i, m := range doc.Members {
		for _, d := range m.EmailDomains {
			if _, dup := l.byDomain[d]; dup {
				return nil, fmt.Errorf("%w: the email domain %s is named twice", ErrInvalidList, d)
			}
			l.byDomain[d] = i
		}
		for _, s := range m.Servers {
			if _, dup := l.byServer[s]; dup {
				return nil, fmt.Errorf("%w: the server %s is named twice", ErrInvalidList, s)
			}
			l.byServer[s] = i
		}
	}
	return l, nil
}

func (d *Document) check() error {
	switch {
	case d.Version == 0:
		return fmt.Errorf("version must be 1 or more")
	case d.IssuedAt.IsZero() || d.ExpiresAt.IsZero():
		return fmt.Errorf("issued_at and expires_at are required")
	case !d.ExpiresAt.After(d.IssuedAt):
		return fmt.Errorf("expires_at must be after issued_at")
	case len(d.Members) == 0:
		return fmt.Errorf("a list needs at least one member")
	}
	for i, m := range d.Members {
		if err := m.check(); err != nil {
			return fmt.Errorf("member %d (%.40q): %v", i+1, m.Name, err)
		}
	}
	return nil
}

func (m *Member) check() error {
	if strings.TrimSpace(m.Name) == "" {
		return fmt.Errorf("name is required")
	}
	for _, s := range []string{m.Name, m.OrgNumber, m.Contact, m.Localpart} {
		if len(s) > maxText {
			return fmt.Errorf("a text field is over %d bytes", maxText)
		}
	}
	if len(m.Servers) == 0 || len(m.Servers) > maxServersPerMember {
		return fmt.Errorf("1 to %d servers", maxServersPerMember)
	}
	for _, s := range m.Servers {
		if !validServerName(s) {
			return fmt.Errorf("server %.80q is not a lower-case host name with an optional port (IP addresses are not allowed)", s)
		}
	}
	if len(m.EmailDomains) > maxDomainsPerMember {
		return fmt.Errorf("at most %d email domains", maxDomainsPerMember)
	}
	for _, d := range m.EmailDomains {
		if !validHost(d) {
			return fmt.Errorf("email domain %.80q is not a lower-case domain name", d)
		}
	}
	if m.Localpart != "" {
		if strings.Count(m.Localpart, "{local}") != 1 || !validLocalpart(strings.NewReplacer("{local}", "x", "{domain}", "x.example").Replace(m.Localpart)) {
			return fmt.Errorf("localpart rule %q must hold {local} once, maybe {domain}, and otherwise only a-z 0-9 . _ = - / +", m.Localpart)
		}
	}
	return nil
}

// validServerName accepts host or host:port, host a lower-case DNS name.
func validServerName(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return validHost(s)
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p < 65536 && strconv.Itoa(p) == port && validHost(host)
}

// validHost accepts a lower-case DNS name of letters, digits and hyphens, not an IP address.
func validHost(h string) bool {
	if h == "" || len(h) > 253 || net.ParseIP(h) != nil {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	// A name of digits and dots alone would read as an IP address to some.
	return strings.ContainsFunc(h, func(r rune) bool { return r >= 'a' && r <= 'z' })
}

// validLocalpart is the localpart grammar of the Matrix specification (user ID grammar).
func validLocalpart(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)) {
			return false
		}
	}
	return true
}

func hostOf(server string) string {
	if h, _, err := net.SplitHostPort(server); err == nil {
		return h
	}
	return server
}
