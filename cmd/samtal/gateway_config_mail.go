package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/mailbridge"
)

// smtpMoreConfig is the part of smtp: beyond listen, domain and the first limits: TLS, AUTH,
// the other limits, trusted relays and the postmaster room (docs/gateway.example.yaml).
type smtpMoreConfig struct {
	MaxHeaderBytes  int            `yaml:"max_header_bytes"`
	MaxLineLength   int            `yaml:"max_line_length"`
	MaxMIMEDepth    int            `yaml:"max_mime_depth"`
	MaxMIMEParts    int            `yaml:"max_mime_parts"`
	SenderRate      int            `yaml:"sender_rate"`
	ReadTimeout     duration       `yaml:"read_timeout"`
	WriteTimeout    duration       `yaml:"write_timeout"`
	TrustedRelays   []string       `yaml:"trusted_relays"`
	PostmasterRoom  string         `yaml:"postmaster_room"`
	TLS             tlsConfig      `yaml:"tls"`
	Auth            smtpAuthConfig `yaml:"auth"`
	SenderAuthLimit duration       `yaml:"sender_auth_timeout"`
}

// tlsConfig is smtp.tls: a certificate for STARTTLS on smtp.listen and, with listen, implicit
// TLS on a second address.
type tlsConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Listen   string `yaml:"listen"`
}

// smtpAuthConfig is smtp.auth: the submitters that may log in (AUTH PLAIN, only over TLS).
type smtpAuthConfig struct {
	TrustSubmitters bool             `yaml:"trust_submitters"`
	Users           []smtpUserConfig `yaml:"users"`
}

// smtpUserConfig is one submitter, with a bcrypt hash of its password (never the password).
type smtpUserConfig struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
}

// dnsConfig is dns: where the SPF, DKIM and DMARC lookups go.
type dnsConfig struct {
	Server string    `yaml:"server"`
	Cache  *duration `yaml:"cache"` // how long answers are kept; absent: defaultDNSCache, 0s: not at all
}

// defaultDNSCache is how long the gateway keeps DNS answers unless dns.cache says otherwise.
const defaultDNSCache = time.Minute

// federationConfig is federation: the signed list of member agencies, for members_only routes.
type federationConfig struct {
	ListFile string `yaml:"list_file"`
	KeyFile  string `yaml:"key_file"`
	// gwsmall part: the list fetched over HTTPS and kept fresh (gateway_config_federation.go).
	ListURL   string   `yaml:"list_url"`
	CAFile    string   `yaml:"ca_file"`
	Refresh   duration `yaml:"refresh"`
	CacheFile string   `yaml:"cache_file"`
	watcher   *federationURL
}

// imapConfig is one entry of imap: a mailbox account the gateway polls (mailbridge.IMAPOptions).
type imapConfig struct {
	Addr         string              `yaml:"addr"`
	Security     string              `yaml:"security"`
	CAFile       string              `yaml:"ca_file"`
	Username     string              `yaml:"username"`
	Password     string              `yaml:"password"`
	OAuth        *imapOAuthConfig    `yaml:"oauth"`
	Mailboxes    []imapMailboxConfig `yaml:"mailboxes"`
	IdleRestart  duration            `yaml:"idle_restart"`
	PollInterval duration            `yaml:"poll_interval"`
	// gwsmall part: the authserv-id of the mailbox server's Authentication-Results to trust.
	TrustAuthServID string `yaml:"trust_authserv_id"`
}

// imapOAuthConfig is where an IMAP account's access tokens come from: a file another program
// keeps current, or an OAuth 2.0 token endpoint (a refresh token, else client credentials).
type imapOAuthConfig struct {
	Mechanism    string   `yaml:"mechanism"`
	TokenFile    string   `yaml:"token_file"`
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
	RefreshToken string   `yaml:"refresh_token"`
}

// imapMailboxConfig is a mailbridge.IMAPMailbox.
type imapMailboxConfig struct {
	Name         string `yaml:"name"`
	Address      string `yaml:"address"`
	Flag         string `yaml:"flag"`
	MoveTo       string `yaml:"move_to"`
	SkipExisting bool   `yaml:"skip_existing"`
}

// mailOptions fills in what the smtp:, dns: and federation: sections add to opts. Every error
// names the key it is about and none shows a secret.
func (cfg *gatewayConfig) mailOptions(opts *mailbridge.Options, log *slog.Logger) error {
	s := &cfg.SMTP.smtpMoreConfig
	opts.MaxHeaderBytes, opts.MaxLineLength = s.MaxHeaderBytes, s.MaxLineLength
	opts.MaxMIMEDepth, opts.MaxMIMEParts, opts.SenderRate = s.MaxMIMEDepth, s.MaxMIMEParts, s.SenderRate
	opts.ReadTimeout, opts.WriteTimeout = time.Duration(s.ReadTimeout), time.Duration(s.WriteTimeout)
	opts.AuthTimeout = time.Duration(s.SenderAuthLimit)
	opts.PostmasterRoom = s.PostmasterRoom
	for i, r := range s.TrustedRelays {
		p, err := parsePrefix(r)
		if err != nil {
			return fmt.Errorf("%w: smtp.trusted_relays[%d]: %q is not an IP address or a CIDR prefix such as 192.0.2.0/24", errConfig, i, r)
		}
		opts.TrustedRelays = append(opts.TrustedRelays, p)
	}
	if s.TLS.CertFile != "" || s.TLS.KeyFile != "" || s.TLS.Listen != "" {
		if s.TLS.CertFile == "" || s.TLS.KeyFile == "" {
			return fmt.Errorf("%w: smtp.tls: cert_file and key_file are both needed", errConfig)
		}
		cert, err := newCertFiles(s.TLS.CertFile, s.TLS.KeyFile, log)
		if err != nil {
			return fmt.Errorf("%w: smtp.tls: %w", errConfig, err)
		}
		opts.TLSConfig = &tls.Config{GetCertificate: cert.get, MinVersion: tls.VersionTLS12}
	}
	if len(s.Auth.Users) > 0 {
		if opts.TLSConfig == nil {
			return fmt.Errorf("%w: smtp.auth.users: AUTH is offered only over TLS; set smtp.tls", errConfig)
		}
		check, err := s.Auth.authFunc()
		if err != nil {
			return err
		}
		opts.Authenticate = check
	} else if s.Auth.TrustSubmitters {
		return fmt.Errorf("%w: smtp.auth.trust_submitters: no smtp.auth.users", errConfig)
	}
	opts.TrustSubmitters = s.Auth.TrustSubmitters
	if cfg.DNS.Server != "" {
		if _, _, err := net.SplitHostPort(cfg.DNS.Server); err != nil {
			return fmt.Errorf("%w: dns.server: %q is not host:port such as 192.0.2.53:53", errConfig, cfg.DNS.Server)
		}
		opts.Resolver = mailbridge.DNSServer(cfg.DNS.Server)
	}
	keep := defaultDNSCache
	if cfg.DNS.Cache != nil {
		keep = time.Duration(*cfg.DNS.Cache)
	}
	if keep < 0 {
		return fmt.Errorf("%w: dns.cache: %v is negative (0s keeps nothing)", errConfig, keep)
	}
	if keep > 0 {
		if opts.Resolver == nil {
			opts.Resolver = net.DefaultResolver
		}
		opts.Resolver = mailbridge.CachingResolver(opts.Resolver, keep)
	}
	fed, err := cfg.Federation.source(log) // gwsmall part: list_file or list_url
	if err != nil {
		return err
	}
	if fed != nil {
		opts.Federation = fed
	} else {
		for i, r := range cfg.Routes {
			if r.MembersOnly {
				return fmt.Errorf("%w: routes[%d].members_only: no federation list (federation.list_file or federation.list_url) to check members against", errConfig, i)
			}
		}
	}
	return nil
}

// check runs the checks of startGateway before anything is opened, so that a configuration
// that cannot work stops the command before it logs in or listens.
func (cfg *gatewayConfig) check(ctx context.Context, log *slog.Logger) error {
	routes, err := cfg.routes()
	if err != nil {
		return err
	}
	if _, err := mailbridge.NewRouter(routes...); err != nil { // imappolicy part: before logging in, not after
		return fmt.Errorf("%w: routes: %w", errConfig, err)
	}
	if err := cfg.mailOptions(new(mailbridge.Options), log); err != nil {
		return err
	}
	if err := cfg.Federation.firstFetch(ctx); err != nil { // gwsmall part
		return err
	}
	_, err = cfg.pollerOptions(ctx)
	return err
}

// parsePrefix reads "192.0.2.0/24" or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// authFunc checks AUTH PLAIN against the users' bcrypt hashes. A user that is not configured
// costs as much as one with a wrong password, so that the reply time does not tell which
// names exist.
func (a smtpAuthConfig) authFunc() (mailbridge.AuthFunc, error) {
	hashes := map[string][]byte{}
	for i, u := range a.Users {
		if u.Username == "" {
			return nil, fmt.Errorf("%w: smtp.auth.users[%d].username is not set", errConfig, i)
		}
		if _, dup := hashes[u.Username]; dup {
			return nil, fmt.Errorf("%w: smtp.auth.users[%d].username: %s is named twice", errConfig, i, u.Username)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			// Not the value: it may be a password written here by mistake.
			return nil, fmt.Errorf("%w: smtp.auth.users[%d].password_hash: not a bcrypt hash ($2b$...); make one with 'samtal gateway hash-password'", errConfig, i)
		}
		hashes[u.Username] = []byte(u.PasswordHash)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("no such user"), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	return func(_ context.Context, username, password string) error {
		h, ok := hashes[username]
		if !ok {
			h = dummy
		}
		if bcrypt.CompareHashAndPassword(h, []byte(password)) != nil || !ok {
			return mailbridge.ErrAuthFailed
		}
		return nil
	}, nil
}

// load reads and verifies the signed federation list, or returns nil when none is configured.
func (f federationConfig) load(log *slog.Logger) (*federationFile, error) {
	if f.ListFile == "" && f.KeyFile == "" {
		return nil, nil
	}
	if f.ListFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("%w: federation: list_file and key_file are both needed", errConfig)
	}
	pem, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: federation.key_file: %w", errConfig, err)
	}
	key, err := federation.ParsePublicKey(pem)
	if err != nil {
		return nil, fmt.Errorf("%w: federation.key_file: %w", errConfig, err)
	}
	ff := &federationFile{path: f.ListFile, key: key, log: log}
	if ff.stamp, err = fileStamp(f.ListFile); err != nil {
		return nil, fmt.Errorf("%w: federation.list_file: %w", errConfig, err)
	}
	if ff.list, err = ff.read(); err != nil {
		return nil, fmt.Errorf("%w: federation.list_file: %w", errConfig, err)
	}
	ff.checked = time.Now()
	return ff, nil
}

// federationFile is the federation list in a file, read again when the file changes (looked
// at no more than once a second): a newer version, signed with the key, replaces the list in
// use; anything else (a bad signature, an older version, a file half written) is logged and the
// list in use kept. A list that has expired names no member, as with a federation.Watcher.
type federationFile struct {
	path string
	key  crypto.PublicKey
	log  *slog.Logger

	mu      sync.Mutex
	list    *federation.List
	stamp   string
	checked time.Time
}

func (f *federationFile) read() (*federation.List, error) {
	signed, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	return federation.Parse(signed, f.key, time.Now(), 0)
}

// current is the list in use, after a look at the file.
func (f *federationFile) current() *federation.List {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) < time.Second {
		return f.list
	}
	f.checked = time.Now()
	stamp, err := fileStamp(f.path)
	if err != nil || stamp == f.stamp {
		return f.list
	}
	l, err := f.read()
	switch {
	case err != nil: // looked at again when it changes again (a file half written)
		f.log.Warn("gateway: federation list file changed but cannot be used; keeping the list in use", "list_file", f.path, "version", f.list.Version(), "err", err)
	case l.Version() <= f.list.Version():
		f.log.Warn("gateway: federation list file holds no newer version; keeping the list in use", "list_file", f.path, "version", f.list.Version(), "file_version", l.Version())
	default:
		f.list = l
		f.log.Info("gateway: federation list reloaded", "list_file", f.path, "version", l.Version())
	}
	f.stamp = stamp
	return f.list
}

// HasDomain reports whether emailDomain is a member agency's, by the list in use.
func (f *federationFile) HasDomain(emailDomain string) bool {
	l := f.current()
	return time.Now().Before(l.ExpiresAt()) && l.HasDomain(emailDomain)
}

// fileStamp says when and how a file last changed.
func fileStamp(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano()), nil
}

// pollerOptions maps the imap: section onto mailbridge.IMAPOptions, with their token sources.
func (cfg *gatewayConfig) pollerOptions(ctx context.Context) ([]mailbridge.IMAPOptions, error) {
	var out []mailbridge.IMAPOptions
	for i, ic := range cfg.IMAP {
		key := fmt.Sprintf("imap[%d]", i)
		o := mailbridge.IMAPOptions{Addr: ic.Addr, Security: ic.Security, Username: ic.Username, Password: ic.Password,
			IdleRestart: time.Duration(ic.IdleRestart), PollInterval: time.Duration(ic.PollInterval), TrustAuthServID: ic.TrustAuthServID}
		if ic.CAFile != "" {
			pem, err := os.ReadFile(ic.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %s.ca_file: %w", errConfig, key, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: %s.ca_file: no PEM certificate in %s", errConfig, key, ic.CAFile)
			}
			host, _, _ := net.SplitHostPort(ic.Addr)
			o.TLSConfig = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if ic.OAuth != nil {
			if ic.Password != "" {
				return nil, fmt.Errorf("%w: %s: password and oauth both set; use one", errConfig, key)
			}
			ts, err := ic.OAuth.tokenSource(ctx, key)
			if err != nil {
				return nil, err
			}
			o.TokenSource, o.Mechanism = ts, ic.OAuth.Mechanism
		}
		for _, mb := range ic.Mailboxes {
			o.Mailboxes = append(o.Mailboxes, mailbridge.IMAPMailbox{Name: mb.Name, Address: mb.Address, Flag: mb.Flag, MoveTo: mb.MoveTo, SkipExisting: mb.SkipExisting})
		}
		out = append(out, o)
	}
	return out, nil
}

// tokenSource is the oauth section's source of access tokens.
func (o *imapOAuthConfig) tokenSource(ctx context.Context, key string) (oauth2.TokenSource, error) {
	switch {
	case o.TokenFile != "" && o.TokenURL != "":
		return nil, fmt.Errorf("%w: %s.oauth: token_file and token_url both set; use one", errConfig, key)
	case o.TokenFile != "":
		return tokenFile(o.TokenFile), nil
	case o.TokenURL == "":
		return nil, fmt.Errorf("%w: %s.oauth: set token_file, or token_url with client_id", errConfig, key)
	case o.ClientID == "":
		return nil, fmt.Errorf("%w: %s.oauth.client_id is not set", errConfig, key)
	}
	// The token sources keep ctx for their requests: the gateway's own, not one that ends
	// with the start-up.
	ctx = context.WithoutCancel(ctx)
	if o.RefreshToken != "" {
		c := oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes, Endpoint: oauth2.Endpoint{TokenURL: o.TokenURL}}
		return c.TokenSource(ctx, &oauth2.Token{RefreshToken: o.RefreshToken}), nil
	}
	c := clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes, TokenURL: o.TokenURL}
	return c.TokenSource(ctx), nil
}

// tokenFile is an access token kept current in a file by another program (a sidecar or a
// cron job): read anew for every login, white space around it ignored.
type tokenFile string

// errNoToken: the token file holds nothing.
var errNoToken = errors.New("the token file is empty")

func (f tokenFile) Token() (*oauth2.Token, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("read the token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, errNoToken
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer"}, nil
}
