package identity

import (
	"context"
	"fmt"
	"strings"

	"github.com/samtalhq/samtal/federation"
)

// FederationMembers is a DomainTable read from the agencies' federation list: an email domain
// of a member maps to that member's first server and its localpart rule. A nil or empty list
// knows no domain, so the directory never guesses a server from outside the federation.
type FederationMembers struct {
	// List answers the lookups; a *federation.Watcher keeps it current as the list is re-signed.
	List interface {
		Member(emailDomain string) (federation.Member, bool)
	}
}

// Lookup returns the rule of the member agency whose email domains include domain, or an error
// matching ErrNotFound.
func (f FederationMembers) Lookup(_ context.Context, domain string) (DomainRule, error) {
	if f.List == nil {
		return DomainRule{}, fmt.Errorf("%w: no federation list for the domain %s", ErrNotFound, domain)
	}
	m, ok := f.List.Member(strings.ToLower(domain))
	if !ok || len(m.Servers) == 0 {
		return DomainRule{}, fmt.Errorf("%w: no member of the federation has the domain %s", ErrNotFound, domain)
	}
	return DomainRule{ServerName: m.Servers[0], Localpart: m.Localpart}, nil
}
