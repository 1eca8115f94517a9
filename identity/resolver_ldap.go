package identity

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// LDAPDirectory resolves through the agency's directory (Active Directory or OpenLDAP): the
// entry whose MailAttr is the address names the account in UserAttr, on ServerName. Two
// entries with the address are ErrAmbiguous.
type LDAPDirectory struct {
	URL          string // ldap://host:389 or ldaps://host:636
	BindDN       string // "" binds anonymously
	BindPassword string
	StartTLS     bool
	TLS          *tls.Config
	BaseDN       string
	Filter       string        // the people; "" means (objectClass=person)
	UserAttr     string        // "" means uid (sAMAccountName in Active Directory)
	MailAttr     string        // "" means mail
	ServerName   string        // the agency's Matrix server name
	Timeout      time.Duration // 0 means 10 seconds
}

// Name returns "ldap".
func (d *LDAPDirectory) Name() string { return "ldap" }

// Resolve searches for the address.
func (d *LDAPDirectory) Resolve(ctx context.Context, addr Address) (Match, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	conn, stop, err := ldapConnect(ctx, d.URL, d.BindDN, d.BindPassword, d.StartTLS, d.TLS, timeout)
	if err != nil {
		return Match{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer stop()
	userAttr, mailAttr := or(d.UserAttr, "uid"), or(d.MailAttr, "mail")
	filter := "(&" + or(d.Filter, "(objectClass=person)") + "(" + mailAttr + "=" + ldap.EscapeFilter(addr.String()) + "))"
	req := ldap.NewSearchRequest(d.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 3, 0, false,
		filter, []string{userAttr}, nil)
	res, err := conn.Search(req)
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return Match{}, fmt.Errorf("%w: search %s: %w", ErrUnavailable, d.URL, err)
	}
	if res == nil || len(res.Entries) == 0 {
		return Match{}, fmt.Errorf("%w: no entry in %s has the address", ErrNotFound, d.URL)
	}
	if len(res.Entries) > 1 {
		return Match{}, fmt.Errorf("%w: %d entries in %s have the address", ErrAmbiguous, len(res.Entries), d.URL)
	}
	local := strings.ToLower(res.Entries[0].GetAttributeValue(userAttr))
	uid := id.NewUserID(local, d.ServerName)
	if err := matrix.ValidateUserID(uid); err != nil || local == "" {
		return Match{}, fmt.Errorf("%w: the entry %s has no usable %s", ErrNotFound, res.Entries[0].DN, userAttr)
	}
	return Match{UserID: uid, Detail: "directory entry " + res.Entries[0].DN}, nil
}
