package mailbridge_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// testCert makes a self-signed certificate for mx.test and 127.0.0.1, and returns the
// server's TLS config and a client's that trusts it.
func testCert(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test"},
		DNSNames:     []string{"mx.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "mx.test"}
}

// serveTLS serves g with implicit TLS on a free loopback port as well, until the test ends.
func serveTLS(t *testing.T, g *mailbridge.Gateway) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.ServeTLS(t.Context(), l) }()
	t.Cleanup(func() {
		_ = g.Close()
		if err := <-served; !errors.Is(err, mailbridge.ErrClosed) {
			t.Errorf("ServeTLS returned %v, want ErrClosed", err)
		}
	})
	return l.Addr().String()
}

// dialStartTLS connects with go-smtp's client, which says EHLO and STARTTLS.
func dialStartTLS(t *testing.T, addr string, cfg *tls.Config) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkPassword is the test's credential check: one submitter.
func checkPassword(_ context.Context, user, password string) error {
	if user == "case-system" && password == "correct horse" {
		return nil
	}
	return mailbridge.ErrAuthFailed
}

// lastSpooled returns the header of the mail spooled last, as the gateway stored it.
func lastSpooled(t *testing.T, db *dbutil.Database) gomessage.Header {
	t.Helper()
	raw := lastSpooledRaw(t, db)
	e, err := gomessage.Read(strings.NewReader(raw))
	if e == nil {
		t.Fatalf("spooled mail unreadable: %v", err)
	}
	return e.Header
}

// TestTLSAndAuth: STARTTLS and implicit TLS work with go-smtp's client and swaks; AUTH is
// offered only over TLS, and AUTH without it is refused with 538 5.7.11 before a password is
// read; wrong credentials get 535 5.7.8; an authenticated submitter (TrustSubmitters) passes
// a route's allow-list and its reject policy, and is named in the Authentication-Results.
func TestTLSAndAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "registry@agency.example", Room: string(room),
		AllowSenders: []string{"@agency.example"}, SenderPolicy: mailbridge.SenderReject})
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := testCert(t)

	// Options that cannot work are refused by New.
	if _, err := mailbridge.New(t.Context(), mailbridge.Options{Client: bot, Router: router, TLSAddr: "127.0.0.1:0"}); !errors.Is(err, mailbridge.ErrMissingOption) {
		t.Errorf("TLSAddr without TLSConfig: %v", err)
	}
	bogus, err := mailbridge.NewRouter(mailbridge.Route{Address: "x@agency.example", Room: string(room), SenderPolicy: "bounce"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mailbridge.New(t.Context(), mailbridge.Options{Client: bot, Router: bogus}); !errors.Is(err, mailbridge.ErrInvalidRoute) {
		t.Errorf("unknown SenderPolicy: %v", err)
	}
	db := openDB(t, "spool.db")
	g, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: db,
		TLSConfig: serverTLS, Authenticate: checkPassword, TrustSubmitters: true})
	tlsAddr := serveTLS(t, g)
	inbox := matrixtest.NewRecorder(t, officer, room)

	// Without TLS: STARTTLS offered, AUTH not, and AUTH refused before any credentials.
	c := dial(t, addr)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered without TLS")
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := textproto.NewConn(raw)
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00case-system\x00correct horse"))
	for _, cmd := range []string{"EHLO x", "AUTH PLAIN " + cred} {
		if err := tc.PrintfLine("%s", cmd); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tc.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	if code, msg, _ := tc.ReadResponse(0); code != 538 || !strings.HasPrefix(msg, "5.7.11") {
		t.Errorf("AUTH without TLS: %d %s, want 538 5.7.11", code, msg)
	}

	// STARTTLS, then AUTH: wrong, then right.
	c = dialStartTLS(t, addr, clientTLS)
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
		t.Errorf("after STARTTLS, AUTH %v %q", ok, mechs)
	}
	wantCode(t, "wrong password", c.Auth(sasl.NewPlainClient("", "case-system", "wrong")), 535, smtp.EnhancedCode{5, 7, 8})
	if err := c.Auth(sasl.NewPlainClient("", "case-system", "correct horse")); err != nil {
		t.Fatal(err)
	}
	// Not on the allow-list and a From that fails DMARC nowhere published: the submitter is
	// trusted (TrustSubmitters), so it is accepted and recorded.
	if err := send(c, "noreply@case-system.example", []string{"registry@agency.example"},
		mail("Case System <noreply@case-system.example>", "Via STARTTLS", "starttls@case-system.example", "submitted")); err != nil {
		t.Fatalf("authenticated submission: %v", err)
	}
	ar, ok := mailbridge.ReadAuthResults(lastSpooled(t, db), "mx.test")
	if !ok || ar.Submitter != "case-system" || !ar.Verified() {
		t.Errorf("Authentication-Results of the submission: %+v, %v", ar, ok)
	}
	inbox.Wait(t, subjectLine("Via STARTTLS"))

	// Implicit TLS: AUTH offered at once, no STARTTLS.
	ic, err := smtp.DialTLS(tlsAddr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ic.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on implicit TLS")
	}
	if err := ic.Auth(sasl.NewPlainClient("", "case-system", "correct horse")); err != nil {
		t.Fatal(err)
	}
	if err := send(ic, "noreply@case-system.example", []string{"registry@agency.example"},
		mail("noreply@case-system.example", "Via implicit TLS", "implicit@case-system.example", "submitted")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Via implicit TLS"))

	// Not authenticated, the same mail is refused: not on the allow-list.
	wantCode(t, "unauthenticated", send(dial(t, addr), "noreply@case-system.example", []string{"registry@agency.example"}, mail("noreply@case-system.example", "Unauthenticated", "", "x")), 550, smtp.EnhancedCode{5, 7, 1})

	// swaks: STARTTLS and AUTH PLAIN.
	out, err := swaks(t, "--server", addr, "--tls", "--auth", "PLAIN", "--auth-user", "case-system", "--auth-password", "correct horse",
		"--from", "noreply@case-system.example", "--to", "registry@agency.example", "--header", "Subject: Via swaks TLS", "--body", "x")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, redact(out))
	}
	inbox.Wait(t, subjectLine("Via swaks TLS"))

	// Three wrong passwords on one connection, then every AUTH gets 421 4.7.0.
	c3 := dialStartTLS(t, addr, clientTLS)
	for range 3 {
		wantCode(t, "wrong password", c3.Auth(sasl.NewPlainClient("", "case-system", "guess")), 535, smtp.EnhancedCode{5, 7, 8})
	}
	wantCode(t, "fourth try", c3.Auth(sasl.NewPlainClient("", "case-system", "correct horse")), 421, smtp.EnhancedCode{4, 7, 0})
}

// redact removes the test password from swaks output before it is printed.
func redact(s string) string {
	s = strings.ReplaceAll(s, "correct horse", "***")
	return strings.ReplaceAll(s, base64.StdEncoding.EncodeToString([]byte("\x00case-system\x00correct horse")), "***")
}
