package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"
)

// maxAnswer bounds what the checker reads of any answer.
const maxAnswer = 1 << 20

// checker runs the steps for one server.
type checker struct {
	server  string
	opts    CheckOptions
	host    string // the server name's host
	dest    string // host:port found by discovery
	tlsName string // the name the certificate must be valid for
	web     *http.Client
	fed     *http.Client
}

func (c *checker) close() {
	for _, cl := range []*http.Client{c.web, c.fed} {
		if cl != nil {
			cl.CloseIdleConnections()
		}
	}
}

func (c *checker) run(ctx context.Context) []StepResult {
	steps := []struct {
		name string
		fn   func(context.Context) StepResult
	}{
		{StepDiscovery, c.discover},
		{StepTLS, c.checkTLS},
		{StepKeys, c.checkKeys},
		{StepVersion, c.checkVersion},
		{StepClientWellKnown, c.checkClientWellKnown},
		{StepProfile, c.checkProfile},
	}
	var out []StepResult
	stop := ""
	for _, s := range steps {
		if stop != "" {
			out = append(out, StepResult{Step: s.name, Status: StatusSkip, Detail: "not run: " + stop})
			continue
		}
		r := s.fn(ctx)
		r.Step = s.name
		if r.Status == StatusFail && r.Err != nil && r.Detail == "" {
			r.Detail = r.Err.Error()
		}
		out = append(out, r)
		if r.Status == StatusFail && (s.name == StepDiscovery || errors.Is(r.Err, ErrUnreachable)) {
			stop = s.name + " failed"
		}
	}
	return out
}

func fail(kind error, format string, args ...any) StepResult {
	msg := fmt.Sprintf(format, args...)
	return StepResult{Status: StatusFail, Detail: msg, Err: fmt.Errorf("%w: %s", kind, msg)}
}

func ok(format string, args ...any) StepResult {
	return StepResult{Status: StatusOK, Detail: fmt.Sprintf(format, args...)}
}

// discover finds where the server listens, as the Matrix server-server specification says:
// an explicit port, else /.well-known/matrix/server, else SRV, else port 8448; and checks
// that something answers there.
func (c *checker) discover(ctx context.Context) StepResult {
	if !validServerName(c.server) {
		return fail(ErrInvalidServerID, "%q is not a lower-case host name with an optional port", c.server)
	}
	c.web = c.httpClient("", true)
	host, port, err := net.SplitHostPort(c.server)
	var path []string
	switch {
	case err == nil:
		c.host, c.dest, c.tlsName = host, c.server, host
		path = append(path, "explicit port "+port)
	default:
		c.host = c.server
		delegated, why := c.wellKnownServer(ctx)
		path = append(path, why)
		name := c.server
		if delegated != "" {
			name = delegated
			if h, _, err := net.SplitHostPort(delegated); err == nil {
				c.dest, c.tlsName = delegated, h
				break
			}
		}
		c.tlsName = name
		if target, why := c.srv(ctx, name); target != "" {
			c.dest = target
			path = append(path, why)
		} else {
			c.dest = net.JoinHostPort(name, "8448")
			path = append(path, why, "port 8448")
		}
	}
	conn, err := c.opts.DialContext(ctx, "tcp", c.dest)
	if err != nil {
		return fail(ErrUnreachable, "%s: %s does not answer: %v", strings.Join(path, ", "), c.dest, cause(ctx, err))
	}
	conn.Close()
	c.fed = c.httpClient(c.tlsName, false)
	return ok("%s -> %s", strings.Join(path, ", "), c.dest)
}

// wellKnownServer reads /.well-known/matrix/server; delegated is "" when there is none,
// and why says what was found.
func (c *checker) wellKnownServer(ctx context.Context) (delegated, why string) {
	var wk struct {
		Server string `json:"m.server"`
	}
	status, err := c.getJSON(ctx, c.web, "https://"+c.server+"/.well-known/matrix/server", "", &wk)
	switch {
	case err != nil && status == 0:
		return "", fmt.Sprintf("no /.well-known/matrix/server (%v)", cause(ctx, err))
	case err != nil:
		return "", fmt.Sprintf("no /.well-known/matrix/server (HTTP %d)", status)
	case !validServerName(wk.Server):
		return "", fmt.Sprintf("/.well-known/matrix/server names no valid m.server (%.80q)", wk.Server)
	}
	return wk.Server, ".well-known delegates to " + wk.Server
}

// srv looks up _matrix-fed._tcp and the older _matrix._tcp records of name.
func (c *checker) srv(ctx context.Context, name string) (target, why string) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := c.opts.LookupSRV(ctx, service, "tcp", name)
		if err == nil && len(addrs) > 0 {
			t := strings.TrimSuffix(addrs[0].Target, ".")
			return net.JoinHostPort(t, strconv.Itoa(int(addrs[0].Port))), fmt.Sprintf("SRV _%s._tcp.%s -> %s:%d", service, name, t, addrs[0].Port)
		}
	}
	return "", "no SRV record"
}

// checkTLS checks the certificate the federation listener presents.
func (c *checker) checkTLS(ctx context.Context) StepResult {
	raw, err := c.opts.DialContext(ctx, "tcp", c.dest)
	if err != nil {
		return fail(ErrUnreachable, "%s does not answer: %v", c.dest, cause(ctx, err))
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{ServerName: c.tlsName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) // verified below, to say exactly what is wrong
	if err := conn.HandshakeContext(ctx); err != nil {
		return fail(ErrUnreachable, "TLS handshake with %s: %v", c.dest, cause(ctx, err))
	}
	certs := conn.ConnectionState().PeerCertificates
	leaf := certs[0]
	if err := leaf.VerifyHostname(c.tlsName); err != nil {
		return fail(ErrWrongCert, "the certificate of %s is for %s, not %s", c.dest, certNames(leaf), c.tlsName)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	now := c.opts.Now()
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: c.tlsName, Roots: c.opts.RootCAs, Intermediates: inter, CurrentTime: now}); err != nil {
		return fail(ErrUntrustedCert, "the certificate of %s: %v", c.dest, err)
	}
	if left := leaf.NotAfter.Sub(now); left < c.opts.MinValidity {
		return fail(ErrCertExpiring, "the certificate of %s expires at %s (in %s)", c.dest, leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour))
	}
	return ok("valid for %s until %s", c.tlsName, leaf.NotAfter.UTC().Format("2006-01-02"))
}

// checkKeys checks that /_matrix/key/v2/server is the server's, current, and signed by one of
// the keys it lists.
func (c *checker) checkKeys(ctx context.Context) StepResult {
	var raw json.RawMessage
	status, err := c.getJSON(ctx, c.fed, "https://"+c.dest+"/_matrix/key/v2/server", c.server, &raw)
	if err != nil {
		return c.httpFail(ctx, "/_matrix/key/v2/server", status, err)
	}
	var keys struct {
		ServerName   string                          `json:"server_name"`
		ValidUntilTS int64                           `json:"valid_until_ts"`
		VerifyKeys   map[string]struct{ Key string } `json:"verify_keys"`
		Signatures   map[string]map[string]string    `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return fail(ErrBadKeys, "the key answer is not a key object: %v", err)
	}
	if keys.ServerName != c.server {
		return fail(ErrBadKeys, "the keys are for %q, not %s", keys.ServerName, c.server)
	}
	if valid := time.UnixMilli(keys.ValidUntilTS); valid.Before(c.opts.Now()) {
		return fail(ErrBadKeys, "the keys were valid until %s", valid.UTC().Format(time.RFC3339))
	}
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(raw, &obj)
	delete(obj, "signatures")
	delete(obj, "unsigned")
	canonical, err := canonicaljson.Marshal(obj)
	if err != nil {
		return fail(ErrBadKeys, "the key object is not canonical JSON: %v", err)
	}
	for keyID, sig := range keys.Signatures[c.server] {
		vk, listed := keys.VerifyKeys[keyID]
		if !listed || !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		pub, err1 := base64.RawStdEncoding.DecodeString(vk.Key)
		s, err2 := base64.RawStdEncoding.DecodeString(sig)
		if err1 == nil && err2 == nil && len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, canonical, s) {
			return ok("signed by %s, valid until %s", keyID, time.UnixMilli(keys.ValidUntilTS).UTC().Format("2006-01-02 15:04"))
		}
	}
	return fail(ErrKeySignature, "no signature of %s on its keys verifies with a key it publishes (%d signatures, %d keys)", c.server, len(keys.Signatures[c.server]), len(keys.VerifyKeys))
}

func (c *checker) checkVersion(ctx context.Context) StepResult {
	var v struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	status, err := c.getJSON(ctx, c.fed, "https://"+c.dest+"/_matrix/federation/v1/version", c.server, &v)
	if err != nil {
		return c.httpFail(ctx, "/_matrix/federation/v1/version", status, err)
	}
	return ok("%s %s", v.Server.Name, v.Server.Version)
}

// checkClientWellKnown reads /.well-known/matrix/client of the server name's host. Clients
// need it to find the homeserver from a user ID; federation does not, so a missing one is a
// warning.
func (c *checker) checkClientWellKnown(ctx context.Context) StepResult {
	var wk struct {
		Homeserver struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	status, err := c.getJSON(ctx, c.web, "https://"+c.host+"/.well-known/matrix/client", "", &wk)
	if err == nil && wk.Homeserver.BaseURL == "" {
		err = errors.New("no m.homeserver.base_url")
	}
	if err != nil {
		why := fmt.Sprintf("HTTP %d", status)
		if status == 0 || status == http.StatusOK {
			why = cause(ctx, err).Error()
		}
		msg := fmt.Sprintf("https://%s/.well-known/matrix/client: %s", c.host, why)
		return StepResult{Status: StatusWarn, Detail: msg, Err: fmt.Errorf("%w: %s", ErrNoWellKnown, msg)}
	}
	return ok("homeserver %s", wk.Homeserver.BaseURL)
}

// checkProfile has our own server query a profile on the checked server over federation.
// "No such user" is an answer from the other server, so it passes.
func (c *checker) checkProfile(ctx context.Context) StepResult {
	if c.opts.Client == nil {
		return StepResult{Status: StatusSkip, Detail: "no client of our own server given"}
	}
	user := id.NewUserID("samtal-federation-check", c.server)
	_, err := c.opts.Client.Mautrix().GetProfile(ctx, user)
	var he mautrix.HTTPError
	switch {
	case err == nil:
		return ok("%s answered for %s", c.server, user)
	case errors.As(err, &he) && he.Response != nil && he.Response.StatusCode == http.StatusNotFound:
		return ok("%s answered: no user %s", c.server, user)
	case errors.As(err, &he) && he.Response != nil:
		return fail(ErrProfileQuery, "our server %s could not query %s: %s", c.opts.Client.UserID().Homeserver(), c.server, strings.TrimSpace(fmt.Sprintf("HTTP %d %s", he.Response.StatusCode, errcode(he))))
	}
	return fail(ErrProfileQuery, "our server could not be asked: %v", cause(ctx, err))
}

func errcode(he mautrix.HTTPError) string {
	if he.RespError != nil {
		return he.RespError.ErrCode
	}
	return ""
}

func (c *checker) httpFail(ctx context.Context, path string, status int, err error) StepResult {
	if status == 0 {
		return fail(ErrUnreachable, "%s %s: %v", c.dest, path, cause(ctx, err))
	}
	return fail(ErrBadResponse, "%s %s: %v", c.dest, path, err)
}

// httpClient makes requests through the configured dialer. verify is for the web endpoints
// (.well-known), which must have a valid certificate; the federation listener's certificate
// is checked by checkTLS, which says exactly what is wrong, so the other steps still run
// when it is.
func (c *checker) httpClient(tlsName string, verify bool) *http.Client {
	tr := &http.Transport{
		DialContext:       c.opts.DialContext,
		TLSClientConfig:   &tls.Config{ServerName: tlsName, RootCAs: c.opts.RootCAs, InsecureSkipVerify: !verify}, // see above
		ForceAttemptHTTP2: false,
		Proxy:             nil,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// getJSON GETs url (with Host host when not "") into out; status is 0 when there was no
// answer.
func (c *checker) getJSON(ctx context.Context, cl *http.Client, url, host string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return resp.StatusCode, fmt.Errorf("not JSON: %v", err)
	}
	return resp.StatusCode, nil
}

// cause prefers "timed out" to the many ways a dial reports a deadline.
func cause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("no answer within the timeout (%v)", ctx.Err())
	}
	return err
}

func certNames(c *x509.Certificate) string {
	names := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = append(names, c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}
