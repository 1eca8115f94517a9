package identity

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// LDAPSource reads who is active from the agency's directory (Active Directory or OpenLDAP):
// every entry under BaseDN that Filter selects is a person on ServerName, active when it also
// matches ActiveFilter. The account's localpart comes from UserAttr.
//
// The source lists everyone on ServerName (Roster.Complete), so a member of a managed room
// there who has no entry has left. A directory that cannot be reached, refuses the bind, or
// returns nobody is ErrSourceUnavailable.
type LDAPSource struct {
	URL          string // ldap://host:389 or ldaps://host:636
	BindDN       string // "" binds anonymously
	BindPassword string
	StartTLS     bool        // upgrade an ldap:// connection
	TLS          *tls.Config // for ldaps:// and StartTLS; nil means the system's roots
	BaseDN       string
	// Filter selects the people; "" means (objectClass=person).
	Filter string
	// ActiveFilter is what an active person also matches, such as Active Directory's
	// (!(userAccountControl:1.2.840.113556.1.4.803:=2)) or a group
	// (memberOf=cn=staff,ou=groups,dc=agency,dc=se); "" means everyone Filter selects is active.
	ActiveFilter string
	UserAttr     string        // the attribute holding the localpart; "" means uid
	MailAttr     string        // "" means mail
	ServerName   string        // the agency's Matrix server name
	Timeout      time.Duration // per connection and search; 0 means 30 seconds
}

// Name returns "ldap:" and the URL.
func (s *LDAPSource) Name() string { return "ldap:" + s.URL }

// Roster searches the directory twice: for everyone, and for the active.
func (s *LDAPSource) Roster(ctx context.Context) (Roster, error) {
	if s.ServerName == "" || s.BaseDN == "" {
		return Roster{}, fmt.Errorf("%w: LDAPSource needs BaseDN and ServerName", ErrSourceUnavailable)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	conn, stop, err := ldapConnect(ctx, s.URL, s.BindDN, s.BindPassword, s.StartTLS, s.TLS, timeout)
	if err != nil {
		return Roster{}, fmt.Errorf("%w: %w", ErrSourceUnavailable, err)
	}
	defer stop()
	filter := s.Filter
	if filter == "" {
		filter = "(objectClass=person)"
	}
	userAttr, mailAttr := or(s.UserAttr, "uid"), or(s.MailAttr, "mail")
	everyone, err := s.search(conn, filter, userAttr, mailAttr)
	if err != nil {
		return Roster{}, err
	}
	if len(everyone) == 0 {
		return Roster{}, fmt.Errorf("%w: %s under %s matches nobody; refusing to read that as everyone gone", ErrSourceUnavailable, filter, s.BaseDN)
	}
	active := everyone
	if s.ActiveFilter != "" {
		active, err = s.search(conn, "(&"+filter+s.ActiveFilter+")", userAttr, mailAttr)
		if err != nil {
			return Roster{}, err
		}
	}
	if ctx.Err() != nil {
		return Roster{}, fmt.Errorf("%w: %w", ErrSourceUnavailable, ctx.Err())
	}
	r := Roster{Complete: []string{s.ServerName}}
	for dn, p := range everyone {
		if _, ok := active[dn]; ok {
			p.Active = true
		} else {
			p.Reason = "disabled in the directory (" + s.URL + ")"
		}
		r.People = append(r.People, p)
	}
	return r, nil
}

func (s *LDAPSource) search(conn *ldap.Conn, filter, userAttr, mailAttr string) (map[string]Person, error) {
	req := ldap.NewSearchRequest(s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		filter, []string{userAttr, mailAttr}, nil)
	res, err := conn.SearchWithPaging(req, 500)
	if err != nil {
		return nil, fmt.Errorf("%w: search %s: %w", ErrSourceUnavailable, s.URL, err)
	}
	out := make(map[string]Person, len(res.Entries))
	for _, e := range res.Entries {
		local := strings.ToLower(e.GetAttributeValue(userAttr))
		if local == "" {
			continue
		}
		uid := id.NewUserID(local, s.ServerName)
		if matrix.ValidateUserID(uid) != nil {
			continue
		}
		out[strings.ToLower(e.DN)] = Person{UserID: uid, Email: e.GetAttributeValue(mailAttr)}
	}
	return out, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func idOf(s string) id.UserID { return id.UserID(strings.TrimSpace(s)) }

// dialerFor is a dialer whose connections are bounded by timeout and by ctx's deadline.
func dialerFor(ctx context.Context, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	return d
}

// ldapConnect dials, upgrades and binds; stop closes the connection. The errors name the DN,
// never the password.
func ldapConnect(ctx context.Context, url, bindDN, password string, startTLS bool, tlsConf *tls.Config, timeout time.Duration) (*ldap.Conn, func(), error) {
	conn, err := ldap.DialURL(url, ldap.DialWithDialer(dialerFor(ctx, timeout)), ldap.DialWithTLSConfig(tlsConf))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	conn.SetTimeout(timeout)
	cancel := context.AfterFunc(ctx, func() { _ = conn.Close() })
	stop := func() { cancel(); _ = conn.Close() }
	if startTLS {
		if err := conn.StartTLS(tlsConf); err != nil {
			stop()
			return nil, nil, fmt.Errorf("StartTLS with %s: %w", url, err)
		}
	}
	if bindDN != "" {
		if err := conn.Bind(bindDN, password); err != nil {
			stop()
			return nil, nil, fmt.Errorf("bind to %s as %s: %w", url, bindDN, err)
		}
	}
	return conn, stop, nil
}
