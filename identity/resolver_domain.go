package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// DomainRule says how an agency's email addresses become Matrix IDs.
type DomainRule struct {
	// ServerName is the agency's Matrix server name; "" means the email domain itself.
	ServerName string `json:"server_name" yaml:"server_name"`
	// Localpart builds the localpart from the address: {local} is the part before the @ in
	// lower case, {domain} the email domain. "" means "{local}"; Tchap uses "{local}-{domain}".
	Localpart string `json:"localpart" yaml:"localpart"`
}

// DomainTable maps an email domain to its agency's rule. Lookup returns an error matching
// ErrNotFound for a domain that is not in the table. The federation list (package federation)
// is one such table; StaticDomains is another.
type DomainTable interface {
	Lookup(ctx context.Context, domain string) (DomainRule, error)
}

// StaticDomains is a DomainTable from configuration: email domain (lower case) -> rule.
type StaticDomains map[string]DomainRule

// Lookup returns the rule for domain.
func (s StaticDomains) Lookup(_ context.Context, domain string) (DomainRule, error) {
	r, ok := s[strings.ToLower(domain)]
	if !ok {
		return DomainRule{}, fmt.Errorf("%w: no agency for the domain %s", ErrNotFound, domain)
	}
	return r, nil
}

// localpartGrammar is the spec's grammar of a user ID's localpart.
var localpartGrammar = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// UserID applies the rule to an address.
func (r DomainRule) UserID(addr Address) (id.UserID, error) {
	tmpl := r.Localpart
	if tmpl == "" {
		tmpl = "{local}"
	}
	if !strings.Contains(tmpl, "{local}") {
		return "", fmt.Errorf("identity: localpart rule %q has no {local}", tmpl)
	}
	local := strings.NewReplacer("{local}", strings.ToLower(addr.Local), "{domain}", addr.Domain).Replace(tmpl)
	if !localpartGrammar.MatchString(local) {
		return "", fmt.Errorf("%w: %s gives the localpart %q, which Matrix IDs cannot have", ErrInvalidAddress, addr, local)
	}
	server := r.ServerName
	if server == "" {
		server = addr.Domain
	}
	uid := id.NewUserID(local, server)
	if err := matrix.ValidateUserID(uid); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidAddress, addr, err)
	}
	return uid, nil
}

// DomainOptions configure a DomainResolver. The zero value is a working default.
type DomainOptions struct {
	// HTTPClient fetches .well-known/matrix/server and /client; nil means one with a
	// 10-second timeout.
	HTTPClient *http.Client
	// LookupTimeout bounds the profile lookup that confirms a guess; 0 means 15 seconds.
	LookupTimeout time.Duration
}

// DomainResolver finds colleagues in other agencies: the email domain names the agency's
// server and localpart rule (a DomainTable), the server is checked through its
// .well-known/matrix/server and .well-known/matrix/client (ClientAPI), and the guessed ID is confirmed by a profile lookup through the
// own homeserver, which asks the other server over federation. A guess the other server does
// not confirm is a not-found, never an answer.
type DomainResolver struct {
	c     *matrix.Client
	table DomainTable
	http  *http.Client
	wait  time.Duration
}

// NewDomainResolver returns a DomainResolver that looks profiles up as c.
func NewDomainResolver(c *matrix.Client, table DomainTable, opts DomainOptions) *DomainResolver {
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = 15 * time.Second
	}
	return &DomainResolver{c: c, table: table, http: hc, wait: opts.LookupTimeout}
}

// Name returns "domain".
func (r *DomainResolver) Name() string { return "domain" }

// Resolve maps addr by its domain's rule and confirms the result with a profile lookup.
func (r *DomainResolver) Resolve(ctx context.Context, addr Address) (Match, error) {
	rule, err := r.table.Lookup(ctx, addr.Domain)
	if err != nil {
		return Match{}, err
	}
	uid, err := rule.UserID(addr)
	if err != nil {
		return Match{}, err
	}
	delegated, err := r.wellKnown(ctx, uid.Homeserver())
	if err != nil {
		return Match{}, err
	}
	clientAPI, err := r.ClientAPI(ctx, uid.Homeserver())
	if err != nil {
		return Match{}, err
	}
	lctx, cancel := context.WithTimeout(ctx, r.wait)
	defer cancel()
	_, err = r.c.Mautrix().GetProfile(lctx, uid)
	switch {
	case err == nil:
	case errCode(err) == "M_NOT_FOUND" || httpStatus(err) == http.StatusNotFound:
		return Match{}, fmt.Errorf("%w: %s has no account %s", ErrNotFound, uid.Homeserver(), uid)
	case lctx.Err() != nil && ctx.Err() == nil:
		return Match{}, fmt.Errorf("%w: profile lookup of %s timed out after %s", ErrUnavailable, uid, r.wait)
	default:
		return Match{}, fmt.Errorf("%w: profile lookup of %s: %w", ErrUnavailable, uid, err)
	}
	tmpl := rule.Localpart
	if tmpl == "" {
		tmpl = "{local}"
	}
	detail := fmt.Sprintf("rule %s for %s, profile found on %s", tmpl, addr.Domain, uid.Homeserver())
	if delegated != "" {
		detail += " (served by " + delegated + ")"
	}
	if clientAPI != "" {
		detail += ", client API at " + clientAPI
	}
	return Match{UserID: uid, Detail: detail}, nil
}

// maxWellKnown bounds a .well-known document.
const maxWellKnown = 64 << 10

// wellKnown checks the server's delegation as the spec's server discovery does: a server name
// with a port or an IP literal has none; otherwise https://NAME/.well-known/matrix/server
// names the host that serves it, or is absent (404). A broken document, or a redirect to
// another host, is an error: a guess is confirmed only where the agency itself points.
func (r *DomainResolver) wellKnown(ctx context.Context, server string) (string, error) {
	if _, _, err := net.SplitHostPort(server); err == nil || net.ParseIP(strings.Trim(server, "[]")) != nil {
		return "", nil
	}
	url := "https://" + server + "/.well-known/matrix/server"
	hc := *r.http
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Hostname() != server || len(via) > 3 {
			return fmt.Errorf("%w: %s redirects to %s", ErrWellKnown, url, req.URL.Host)
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrWellKnown, url, err)
	}
	resp, err := hc.Do(req)
	if errors.Is(err, ErrWellKnown) {
		return "", err
	}
	if isTimeout(context.Background(), err) {
		return "", fmt.Errorf("%w: %s timed out", ErrUnavailable, url)
	}
	if err != nil {
		// No web server for the name: no delegation, as in server discovery; the profile
		// lookup decides.
		return "", nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: %s answered %s", ErrWellKnown, url, resp.Status)
	}
	var doc struct {
		Server string `json:"m.server"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWellKnown+1))
	if err != nil {
		return "", fmt.Errorf("%w: read %s: %w", ErrUnavailable, url, err)
	}
	if len(body) > maxWellKnown {
		return "", fmt.Errorf("%w: %s is over %d bytes", ErrWellKnown, url, maxWellKnown)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("%w: %s is not JSON: %v", ErrWellKnown, url, err)
	}
	if doc.Server == "" || strings.ContainsAny(doc.Server, "/ ") {
		return "", fmt.Errorf("%w: %s has no valid m.server", ErrWellKnown, url)
	}
	return doc.Server, nil
}

// errCode returns the Matrix errcode of a mautrix error, or "".
func errCode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode
	}
	var me *matrix.HTTPError
	if errors.As(err, &me) {
		return me.ErrCode
	}
	return ""
}

// httpStatus returns the HTTP status of a mautrix error, or 0.
func httpStatus(err error) int {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode
	}
	var me *matrix.HTTPError
	if errors.As(err, &me) {
		return me.Status
	}
	return 0
}
