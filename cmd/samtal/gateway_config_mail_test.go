package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/internal/dnstest"
	"github.com/samtalhq/samtal/internal/dovecottest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestGatewayConfigSections starts `samtal gateway` from a YAML file with every section the
// library has and checks that each is used, against real parts: a homeserver, a DNS server on
// loopback, a test CA's certificate, a signed federation list and Dovecot.
func TestGatewayConfigSections(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	dir := t.TempDir()
	srv := matrixtest.NewServer(t)
	officer, room := mailRoom(t, srv, srv.URL)

	// DNS: agency.example and outsider.example send from loopback (SPF), forged.example does not.
	zone := dnstest.Start(t)
	sendFromLoopback(zone, "agency.example", "outsider.example")
	zone.TXT("forged.example", "v=spf1 ip4:192.0.2.1 -all")
	zone.TXT("_dmarc.forged.example", "v=DMARC1; p=reject")

	ca := newTestCA(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	firstSerial := ca.issue(t, certFile, keyFile)

	hash, err := bcrypt.GenerateFromPassword([]byte("submit-secret-4711"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GW_TEST_HASH", string(hash))

	fedList, fedKey, fedSigner := writeFederationList(t, dir, "agency.example")

	tokens := newTokenServer(t)
	imap := dovecottest.Start(t, dovecottest.Options{Introspection: tokens.URL + "/introspect"})
	ic := imap.Client(t)
	for _, mb := range []string{"ByTokenFile", "ByRefreshToken"} {
		if err := ic.Create(mb, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(dir, "imap-token")
	if err := os.WriteFile(tokenFile, []byte("file-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens.activate("file-token-1")
	t.Setenv("GW_TEST_IMAP_PASSWORD", imap.Password)

	cfgPath := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(`database: ${SAMTAL_DB}
matrix: {e2ee: false}
smtp:
  listen: 127.0.0.1:0
  domain: mx.test
  max_header_fields: 40
  trusted_relays: [127.0.0.2]
  tls: {cert_file: %[1]s, key_file: %[2]s, listen: "127.0.0.1:0"}
  auth:
    users:
      - {username: casesystem@agency.example, password_hash: "${GW_TEST_HASH}"}
http: {listen: "127.0.0.1:0"}
dns: {server: "%[3]s"}
federation: {list_file: %[4]s, key_file: %[5]s}
delivery: {min_retry_delay: 50ms, max_retry_delay: 500ms}
imap:
  - addr: %[6]s
    security: none
    username: %[7]s
    password: ${GW_TEST_IMAP_PASSWORD}
    mailboxes: [{name: INBOX, address: open@agency.example}]
  - addr: %[6]s
    security: none
    username: %[7]s
    oauth: {token_file: %[8]s}
    mailboxes: [{name: ByTokenFile, address: open@agency.example}]
  - addr: %[6]s
    security: none
    username: %[7]s
    oauth: {mechanism: OAUTHBEARER, token_url: "%[9]s/token", client_id: gateway, client_secret: client-secret-1, refresh_token: refresh-1}
    mailboxes: [{name: ByRefreshToken, address: open@agency.example}]
routes:
  - {address: cases@agency.example, room: "%[10]s", sender_policy: reject}
  - {address: open@agency.example, room: "%[10]s"}
  - {address: members@agency.example, room: "%[10]s", members_only: true}
`, certFile, keyFile, zone.Addr, fedList, fedKey, imap.Addr, imap.User, tokenFile, tokens.URL, room))

	gw := serveGateway(t, cfgPath)
	smtpAddr, smtpsAddr := gw.smtpAddr, gw.listener(t, "smtps")
	arrives := func(t *testing.T, subject string) {
		t.Helper()
		waitBody(t, officer, room, "Subject: "+subject)
	}
	clientTLS := &tls.Config{RootCAs: ca.pool, ServerName: "mx.test"}

	t.Run("tls starttls and auth", func(t *testing.T) {
		c, err := smtp.DialStartTLS(smtpAddr, clientTLS)
		if err != nil {
			t.Fatalf("STARTTLS with the test CA's certificate: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
			t.Fatalf("AUTH not offered over TLS: %v %q", ok, mechs)
		}
		wantSMTPCode(t, "a wrong password", c.Auth(sasl.NewPlainClient("", "casesystem@agency.example", "wrong")), 535, smtp.EnhancedCode{5, 7, 8})
		if err := c.Auth(sasl.NewPlainClient("", "casesystem@agency.example", "submit-secret-4711")); err != nil {
			t.Fatalf("AUTH with the configured user: %v", err)
		}
		if err := sendOn(c, "casesystem@agency.example", "cases@agency.example", mailText("System <casesystem@agency.example>", "Submitted over STARTTLS", "")); err != nil {
			t.Fatal(err)
		}
		arrives(t, "Submitted over STARTTLS")
	})
	t.Run("auth refused without tls", func(t *testing.T) {
		conn, err := net.Dial("tcp", smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tp := textproto.NewConn(conn)
		if _, _, err := tp.ReadResponse(220); err != nil {
			t.Fatal(err)
		}
		_ = tp.PrintfLine("EHLO client.test")
		_, ehlo, err := tp.ReadResponse(250)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ehlo, "AUTH") {
			t.Errorf("AUTH advertised without TLS:\n%s", ehlo)
		}
		_ = tp.PrintfLine("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00casesystem@agency.example\x00submit-secret-4711")))
		if code, msg, _ := tp.ReadResponse(0); code != 538 || !strings.HasPrefix(msg, "5.7.11 ") {
			t.Errorf("AUTH without TLS: %d %s, want 538 5.7.11", code, msg)
		}
	})
	t.Run("tls implicit", func(t *testing.T) {
		conn, err := tls.Dial("tcp", smtpsAddr, clientTLS)
		if err != nil {
			t.Fatalf("implicit TLS with the test CA's certificate: %v", err)
		}
		c := smtp.NewClient(conn)
		t.Cleanup(func() { c.Close() })
		if err := c.Auth(sasl.NewPlainClient("", "casesystem@agency.example", "submit-secret-4711")); err != nil {
			t.Fatalf("AUTH over implicit TLS: %v", err)
		}
		if err := sendOn(c, "casesystem@agency.example", "cases@agency.example", mailText("System <casesystem@agency.example>", "Submitted over implicit TLS", "")); err != nil {
			t.Fatal(err)
		}
		arrives(t, "Submitted over implicit TLS")
	})
	t.Run("swaks starttls and auth", func(t *testing.T) {
		out, err := exec.CommandContext(t.Context(), "swaks", "--server", smtpAddr, "--tls", "--auth", "PLAIN",
			"--auth-user", "casesystem@agency.example", "--auth-password", "submit-secret-4711",
			"--from", "casesystem@agency.example", "--to", "cases@agency.example", "--header", "Subject: Via swaks", "--body", "x").CombinedOutput()
		if err != nil {
			// Only the server's replies: swaks prints the credentials it sends.
			var replies []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(strings.TrimSpace(l), "<") {
					replies = append(replies, l)
				}
			}
			t.Fatalf("swaks: %v; the server answered:\n%s", err, strings.Join(replies, "\n"))
		}
		arrives(t, "Via swaks")
	})
	t.Run("tls certificate reloaded", func(t *testing.T) {
		second := ca.issue(t, certFile, keyFile)
		if second.Cmp(firstSerial) == 0 {
			t.Fatal("the test CA issued the same serial twice")
		}
		matrixtest.Eventually(t, func() error {
			conn, err := tls.Dial("tcp", smtpsAddr, clientTLS)
			if err != nil {
				return err
			}
			defer conn.Close()
			if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(second) != 0 {
				return fmt.Errorf("server still shows certificate %v, want the renewed %v", got, second)
			}
			return nil
		})
	})
	t.Run("dns and sender policy", func(t *testing.T) {
		c := dialSMTP(t, smtpAddr, "127.0.0.1")
		// Refused only if the DMARC record of forged.example came from the configured server.
		wantSMTPCode(t, "forged From on a reject route", sendOn(c, "x@forged.example", "cases@agency.example", mailText("Boss <boss@forged.example>", "Forged", "")), 550, smtp.EnhancedCode{5, 7, 1})
		if err := sendOn(c, "x@forged.example", "open@agency.example", mailText("Boss <boss@forged.example>", "Forged on a mark route", "")); err != nil {
			t.Fatalf("a mark route takes it: %v", err)
		}
		arrives(t, "Forged on a mark route")
	})
	t.Run("trusted relays", func(t *testing.T) {
		// Through the relay (127.0.0.2), its SPF verdict stands: forged.example passes.
		relayed := "Authentication-Results: relay.agency.example; spf=pass smtp.mailfrom=x@forged.example\r\n" + mailText("Boss <boss@forged.example>", "Relayed", "")
		c := dialSMTP(t, smtpAddr, "127.0.0.2")
		if err := sendOn(c, "x@forged.example", "cases@agency.example", relayed); err != nil {
			t.Fatalf("through the trusted relay: %v", err)
		}
		arrives(t, "Relayed")
		c = dialSMTP(t, smtpAddr, "127.0.0.1")
		wantSMTPCode(t, "the same mail from a client that is not a relay", sendOn(c, "x@forged.example", "cases@agency.example", relayed), 550, smtp.EnhancedCode{5, 7, 1})
	})
	t.Run("federation members only", func(t *testing.T) {
		c := dialSMTP(t, smtpAddr, "127.0.0.1")
		if err := sendOn(c, "anna@agency.example", "members@agency.example", mailText("Anna <anna@agency.example>", "From a member", "")); err != nil {
			t.Fatalf("a member's verified mail: %v", err)
		}
		arrives(t, "From a member")
		wantSMTPCode(t, "a verified domain outside the list", sendOn(c, "eve@outsider.example", "members@agency.example", mailText("Eve <eve@outsider.example>", "Outsider", "")), 550, smtp.EnhancedCode{5, 7, 1})
	})
	t.Run("federation list file reloaded", func(t *testing.T) {
		writeListVersion(t, fedSigner, fedList, 2, "agency.example", "outsider.example")
		c := dialSMTP(t, smtpAddr, "127.0.0.1")
		matrixtest.Eventually(t, func() error {
			return sendOn(c, "eve@outsider.example", "members@agency.example", mailText("Eve <eve@outsider.example>", "Outsider, now a member", ""))
		})
		arrives(t, "Outsider, now a member")
	})
	t.Run("limits", func(t *testing.T) {
		c := dialSMTP(t, smtpAddr, "127.0.0.1")
		wantSMTPCode(t, "43 header fields over max_header_fields 40", sendOn(c, "anna@agency.example", "open@agency.example", mailText("Anna <anna@agency.example>", "Many fields", strings.Repeat("X-Field: x\r\n", 39))), 552, smtp.EnhancedCode{5, 3, 4})
		if err := sendOn(c, "anna@agency.example", "open@agency.example", mailText("Anna <anna@agency.example>", "Few fields", strings.Repeat("X-Field: x\r\n", 30))); err != nil {
			t.Fatalf("under the limit, on the same connection: %v", err)
		}
		arrives(t, "Few fields")
	})
	t.Run("imap pollers", func(t *testing.T) {
		for _, mb := range []string{"INBOX", "ByTokenFile", "ByRefreshToken"} {
			dovecottest.Append(t, ic, mb, "From: Anna <anna@agency.example>\r\nTo: open@agency.example\r\nSubject: IMAP "+mb+"\r\nMessage-ID: <imap-"+mb+"@agency.example>\r\n\r\nHello\r\n")
		}
		for _, mb := range []string{"INBOX", "ByTokenFile", "ByRefreshToken"} {
			arrives(t, "IMAP "+mb)
		}
		if n := tokens.refreshes(); n == 0 {
			t.Error("the refresh-token grant was never used")
		}
	})
	for _, secret := range []string{"submit-secret-4711", imap.Password, "file-token-1", "client-secret-1", "refresh-1", "issued-"} {
		if strings.Contains(gw.errOut.String(), secret) || strings.Contains(gw.out.String(), secret) || strings.Contains(gw.logs.String(), secret) {
			t.Errorf("a secret (%.6s...) is in the gateway's output or log", secret)
		}
	}
}

// TestGatewayConfigSectionErrors: a section that cannot work as written is refused at start,
// with the key it is about, and never with the secret in it.
func TestGatewayConfigSectionErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	ca.issue(t, cert, key)
	tlsYAML := fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", cert, key)
	route := "routes: [{address: a@b.example, room: '!r:b'}]\n"
	for _, tc := range []struct{ body, want string }{
		{"smtp: {tls: {cert_file: " + cert + "}}\n" + route, "smtp.tls: cert_file and key_file"},
		{"smtp: {tls: {cert_file: " + cert + ", key_file: /nonexistent/k.pem}}\n" + route, "key_file"},
		{"smtp: {tls: {cert_fiel: x}}\n" + route, "cert_fiel"},
		{"smtp: {auth: {users: [{username: u, password_hash: x}]}}\n" + route, "smtp.auth.users: AUTH is offered only over TLS"},
		{"smtp: {" + tlsYAML + ", auth: {users: [{username: u, password_hash: hunter2-plain}]}}\n" + route, "smtp.auth.users[0].password_hash: not a bcrypt hash"},
		{"smtp: {auth: {trust_submitters: true}}\n" + route, "smtp.auth.trust_submitters"},
		{"smtp: {trusted_relays: [10.0.0.0/33]}\n" + route, "smtp.trusted_relays[0]"},
		{"dns: {server: 192.0.2.53}\n" + route, "dns.server"},
		{"dns: {cache: -1s}\n" + route, "dns.cache"},
		{"routes: [{address: a@b.example, room: '!r:b', members_only: true}]\n", "routes[0].members_only"},
		{"federation: {list_file: x}\n" + route, "federation: list_file and key_file"},
		{"federation: {list_file: /nonexistent/l, key_file: /nonexistent/k}\n" + route, "federation.key_file"},
	} {
		p := filepath.Join(dir, "gateway.yaml")
		writeConfig(t, p, "database: x.db\n"+tc.body)
		cfg, err := loadGatewayConfig(p)
		if err == nil {
			err = cfg.mailOptions(new(mailbridge.Options), slog.New(slog.DiscardHandler))
		}
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n  %v,\n  want an error saying %q", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows what was written as a password hash: %v", err)
		}
	}
	for _, tc := range []struct{ body, want string }{
		{"routes: [{address: a@b.example, room: '!r:b', sender_policy: drop}]\n", "routes[0].sender_policy"},
	} {
		p := filepath.Join(dir, "gateway.yaml")
		writeConfig(t, p, "database: x.db\n"+tc.body)
		cfg, err := loadGatewayConfig(p)
		if err == nil {
			_, err = cfg.routes()
		}
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.body, err, tc.want)
		}
	}
	for _, tc := range []struct{ body, want string }{
		{"imap: [{addr: 'h:993', username: u, password: p, oauth: {token_file: f}}]\n" + route, "imap[0]: password and oauth both set"},
		{"imap: [{addr: 'h:993', username: u, oauth: {token_file: f, token_url: 'https://t'}}]\n" + route, "imap[0].oauth: token_file and token_url"},
		{"imap: [{addr: 'h:993', username: u, oauth: {token_url: 'https://t'}}]\n" + route, "imap[0].oauth.client_id"},
		{"imap: [{addr: 'h:993', username: u, ca_file: /nonexistent/ca.pem, password: p}]\n" + route, "imap[0].ca_file"},
	} {
		p := filepath.Join(dir, "gateway.yaml")
		writeConfig(t, p, "database: x.db\n"+tc.body)
		cfg, err := loadGatewayConfig(p)
		if err == nil {
			_, err = cfg.pollerOptions(t.Context())
		}
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.body, err, tc.want)
		}
	}
}

// TestGatewayConfigCheckedFirst: `samtal gateway` with a section that cannot work exits with
// a usage error naming the key, before it logs in (there is no homeserver here to log in to).
func TestGatewayConfigCheckedFirst(t *testing.T) {
	clearEnv(t)
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	writeConfig(t, p, "database: "+filepath.Join(t.TempDir(), "gw.db")+"\nmatrix: {homeserver: 'http://127.0.0.1:1'}\nroutes: [{address: a@b.example, room: '!r:b', members_only: true}]\n")
	r := samtal(t, nil, "gateway", "--config", p)
	if r.code != exitUsage || !strings.Contains(r.stderr, "routes[0].members_only") {
		t.Errorf("exit %d, stderr %q; want a usage error naming routes[0].members_only", r.code, r.stderr)
	}
}

// TestGatewayHashPassword: `samtal gateway hash-password` prints a bcrypt hash of the password
// on stdin that the gateway's AUTH check accepts, and not the password.
func TestGatewayHashPassword(t *testing.T) {
	r := samtal(t, strings.NewReader("a long and secret password\n"), "gateway", "hash-password")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	hash := strings.TrimSpace(r.stdout)
	if strings.Contains(r.stdout+r.stderr, "secret password") {
		t.Error("the password is in the output")
	}
	check, err := smtpAuthConfig{Users: []smtpUserConfig{{Username: "u", PasswordHash: hash}}}.authFunc()
	if err != nil {
		t.Fatal(err)
	}
	if err := check(t.Context(), "u", "a long and secret password"); err != nil {
		t.Errorf("the right password: %v", err)
	}
	for _, wrong := range [][2]string{{"u", "a long and secret passwor"}, {"v", "a long and secret password"}} {
		if err := check(t.Context(), wrong[0], wrong[1]); !errors.Is(err, mailbridge.ErrAuthFailed) {
			t.Errorf("%s with a wrong password or name: %v, want ErrAuthFailed", wrong[0], err)
		}
	}
}

// testCA is a certificate authority of the test's own, whose certificates the clients trust.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "samtal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, serial: 1}
}

// issue writes a new certificate for mx.test and its key as PEM files and returns its serial.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	serial := big.NewInt(ca.serial)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "mx.test"}, DNSNames: []string{"mx.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key first, then the certificate, each replaced whole (rename), as a renewal does.
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return serial
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeFederationList writes a new public key and a list signed with it in which the
// domains are member agencies' email domains; it returns the files and the signer.
func writeFederationList(t *testing.T, dir string, domains ...string) (listFile, keyFile string, signer crypto.Signer) {
	t.Helper()
	priv, pub, err := federation.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if signer, err = federation.ParsePrivateKey(priv); err != nil {
		t.Fatal(err)
	}
	listFile, keyFile = filepath.Join(dir, "federation.jws"), filepath.Join(dir, "federation.pub.pem")
	writeConfig(t, keyFile, string(pub))
	writeListVersion(t, signer, listFile, 1, domains...)
	return listFile, keyFile, signer
}

// writeListVersion writes a version of the federation list, one member agency per domain.
func writeListVersion(t *testing.T, signer crypto.Signer, path string, version uint64, domains ...string) {
	t.Helper()
	doc := federation.Document{Version: version, IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour)}
	for i, d := range domains {
		doc.Members = append(doc.Members, federation.Member{Name: "Agency " + d, OrgNumber: fmt.Sprint(i + 1), Servers: []string{"matrix." + d}, EmailDomains: []string{d}, Contact: "ops@" + d})
	}
	signed, err := federation.Sign(doc, signer)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, path, signed)
}

// tokenServer is a fake OAuth 2.0 identity provider: a token endpoint that issues an access
// token for the refresh token "refresh-1", and the introspection endpoint (RFC 7662) Dovecot
// asks. Dovecot and the gateway are real.
type tokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	active map[string]bool
	issued int
}

func newTokenServer(t *testing.T) *tokenServer {
	ts := &tokenServer{active: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("refresh_token") != "refresh-1" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		ts.mu.Lock()
		ts.issued++
		tok := fmt.Sprintf("issued-%d", ts.issued)
		ts.active[tok] = true
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
	})
	mux.HandleFunc("POST /introspect", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		ts.mu.Lock()
		ok := ts.active[r.Form.Get("token")]
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			fmt.Fprint(w, `{"active":false}`)
			return
		}
		fmt.Fprint(w, `{"active":true,"username":"cases"}`)
	})
	ts.Server = httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) activate(tok string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.active[tok] = true
}

func (ts *tokenServer) refreshes() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued
}

// dialSMTP connects to addr from the loopback address from (127.0.0.2 poses as a relay) and
// says EHLO; closed when the test ends.
func dialSMTP(t *testing.T, addr, from string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 30 * time.Second}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// sendOn sends one mail on an open connection, which stays usable for the next.
func sendOn(c *smtp.Client, from, to, raw string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		_ = c.Reset()
		return err
	}
	w, err := c.Data()
	if err != nil {
		_ = c.Reset()
		return err
	}
	if _, err := w.Write([]byte(raw)); err != nil {
		return err
	}
	return w.Close()
}

// mailText is a small mail with a unique Message-ID and extra header lines.
func mailText(from, subject, extra string) string {
	id := strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(subject))
	return "From: " + from + "\r\nTo: someone@agency.example\r\nSubject: " + subject + "\r\nMessage-ID: <" + id + "-" + fmt.Sprint(time.Now().UnixNano()) + "@test>\r\n" + extra + "\r\nHello\r\n"
}

// wantSMTPCode fails the test unless err is an SMTP reply with code and enhanced code.
func wantSMTPCode(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Errorf("%s: %v, want %d %d.%d.%d", what, err, code, enh[0], enh[1], enh[2])
	}
}

// TestGatewayExampleConfigSections: every commented-out setting of the documented example
// configuration is a real key with a usable value: uncommented, the file loads (unknown keys
// would be refused), its routes make a router and its IMAP entries make poller options.
func TestGatewayExampleConfigSections(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "gateway.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	setting := regexp.MustCompile(`(?m)^(\s*)# (\s*(?:[a-z_]+:|- ))`)
	uncommented := setting.ReplaceAllString(string(raw), "$1$2")
	if n := len(setting.FindAllString(string(raw), -1)); n < 30 {
		t.Fatalf("only %d commented-out settings found; did the example's layout change?", n)
	}
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	writeConfig(t, p, uncommented)
	for _, v := range []string{"CASESYSTEM_PASSWORD_HASH", "IMAP_PASSWORD", "IMAP_CLIENT_ID", "IMAP_CLIENT_SECRET"} {
		t.Setenv(v, "x")
	}
	cfg, err := loadGatewayConfig(p)
	if err != nil {
		t.Fatalf("the example with every setting uncommented: %v", err)
	}
	if cfg.SMTP.TLS.Listen != "0.0.0.0:465" || cfg.DNS.Server != "127.0.0.53:53" || cfg.Federation.KeyFile == "" || len(cfg.SMTP.Auth.Users) != 1 {
		t.Errorf("sections not read: %+v", cfg)
	}
	routes, err := cfg.routes()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mailbridge.NewRouter(routes...); err != nil {
		t.Error(err)
	}
	imap, err := cfg.pollerOptions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(imap) != 2 || imap[0].Mailboxes[0].Flag != `\Seen` || imap[1].TokenSource == nil || imap[1].Mechanism != "XOAUTH2" ||
		imap[0].TrustAuthServID != "mx.agency.example" {
		t.Errorf("imap = %+v", imap)
	}
}
