package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// checkEnv is what a check test dials: the federation's servers through LoopbackAddr, and
// fault servers by name.
type checkEnv struct {
	roots  *x509.CertPool
	routes map[string]string // host:port as asked -> where it really is
}

func newCheckEnv(t *testing.T, servers ...*matrixtest.Server) *checkEnv {
	t.Helper()
	return &checkEnv{roots: newCheckEnvRoots(t, servers...), routes: map[string]string{}}
}

// newCheckEnvRoots trusts the servers' self-signed certificates.
func newCheckEnvRoots(t testing.TB, servers ...*matrixtest.Server) *x509.CertPool {
	t.Helper()
	roots := x509.NewCertPool()
	for _, s := range servers {
		pemBytes, err := os.ReadFile(s.TLSCertFile())
		if err != nil {
			t.Fatal(err)
		}
		roots.AppendCertsFromPEM(pemBytes)
	}
	return roots
}

func (e *checkEnv) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if to, ok := e.routes[addr]; ok {
		addr = to
	} else if to, ok := matrixtest.LoopbackAddr(addr); ok {
		addr = to
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// noSRV is a resolver without records: the fault for names that have none.
func noSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}

func (e *checkEnv) options() federation.CheckOptions {
	return federation.CheckOptions{RootCAs: e.roots, DialContext: e.dial, LookupSRV: noSRV, Timeout: 20 * time.Second}
}

// faultServer is a fault-injecting HTTPS server (not a homeserver): it presents a
// certificate for names, trusted by env, and answers with handler. It returns its address.
func (e *checkEnv) faultServer(t *testing.T, names []string, handler http.Handler) string {
	t.Helper()
	return e.faultServerTB(t, names, handler)
}

func (e *checkEnv) faultServerTB(t testing.TB, names []string, handler http.Handler) string {
	t.Helper()
	return e.faultServerUntil(t, time.Now().Add(90*24*time.Hour), names, handler)
}

// faultServerUntil is faultServer with a certificate valid until notAfter.
func (e *checkEnv) faultServerUntil(t testing.TB, notAfter time.Time, names []string, handler http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t, e.roots, notAfter, names...)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func selfSigned(t testing.TB, pool *x509.CertPool, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

// keyServer answers /_matrix/key/v2/server for name, signed by sigKey while publishing
// pubKey (the same key for an honest server), and /_matrix/federation/v1/version.
func keyServer(t testing.TB, name string, pubKey ed25519.PublicKey, sigKey ed25519.PrivateKey) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/federation/v1/version":
			_, _ = w.Write([]byte(`{"server":{"name":"fault","version":"0"}}`))
		case "/_matrix/key/v2/server":
			obj := map[string]any{
				"server_name":     name,
				"valid_until_ts":  time.Now().Add(time.Hour).UnixMilli(),
				"verify_keys":     map[string]any{"ed25519:k1": map[string]string{"key": base64.RawStdEncoding.EncodeToString(pubKey)}},
				"old_verify_keys": map[string]any{},
			}
			canonical, err := canonicaljson.Marshal(obj)
			if err != nil {
				t.Error(err)
			}
			obj["signatures"] = map[string]any{name: map[string]string{"ed25519:k1": base64.RawStdEncoding.EncodeToString(ed25519.Sign(sigKey, canonical))}}
			_ = json.NewEncoder(w).Encode(obj)
		default:
			http.NotFound(w, r)
		}
	})
}

// TestCheck: A and B pass, each step against the real Dendrite; each fault is named by the
// step and the error it fails with.
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two federated homeservers")
	}
	fed := matrixtest.NewFederation(t, 2, matrixtest.DistinctHosts())
	a, b := fed[0], fed[1]
	env := newCheckEnv(t, a, b)

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	env.routes["wrongcert.localhost:8448"] = env.faultServer(t, []string{"other.example"}, keyServer(t, "wrongcert.localhost:8448", pub, priv))
	env.routes["badkeys.localhost:8448"] = env.faultServer(t, []string{"badkeys.localhost"}, keyServer(t, "badkeys.localhost:8448", pub, otherPriv))
	env.routes["goodkeys.localhost:8448"] = env.faultServer(t, []string{"goodkeys.localhost"}, keyServer(t, "goodkeys.localhost:8448", pub, priv))
	env.routes["expiring.localhost:8448"] = env.faultServerUntil(t, time.Now().Add(48*time.Hour), []string{"expiring.localhost"}, keyServer(t, "expiring.localhost:8448", pub, priv))
	env.routes["nowk.localhost:443"] = env.faultServer(t, []string{"nowk.localhost"}, http.NotFoundHandler())
	env.routes["nowk.localhost:8448"] = closedPort(t)
	env.routes["silent.localhost:8448"] = silentListener(t)

	opts := env.options()
	opts.Client = a.NewClient(t, "checker")
	servers := []string{a.ServerName, b.ServerName, "wrongcert.localhost:8448", "badkeys.localhost:8448", "goodkeys.localhost:8448", "nowk.localhost", "expiring.localhost:8448", "silent.localhost:8448"}
	ctx := context.Background()
	silentOpts := opts
	silentOpts.Timeout = 2 * time.Second

	reports := federation.Check(ctx, servers[:7], opts)
	reports = append(reports, federation.Check(ctx, servers[7:], silentOpts)...)
	for _, r := range reports {
		for _, s := range r.Steps {
			t.Logf("%s %s %s: %s", r.Server, s.Step, s.Status, s.Detail)
		}
	}
	for _, r := range reports[:2] {
		if !r.OK {
			t.Errorf("%s failed: %+v", r.Server, r.Failed())
		}
		for _, s := range r.Steps {
			if s.Step != federation.StepClientWellKnown && s.Status != federation.StatusOK {
				t.Errorf("%s %s: %s %s", r.Server, s.Step, s.Status, s.Detail)
			}
		}
	}
	for _, tc := range []struct {
		report federation.ServerReport
		step   string
		want   error
		detail string
	}{
		{reports[2], federation.StepTLS, federation.ErrWrongCert, "is for other.example, not wrongcert.localhost"},
		{reports[3], federation.StepKeys, federation.ErrKeySignature, "no signature of badkeys.localhost:8448"},
		{reports[5], federation.StepDiscovery, federation.ErrUnreachable, "no /.well-known/matrix/server (HTTP 404), no SRV record, port 8448"},
		{reports[6], federation.StepTLS, federation.ErrCertExpiring, "the certificate of expiring.localhost:8448 expires at"},
		{reports[7], federation.StepTLS, federation.ErrUnreachable, "no answer within the timeout"},
	} {
		failed := tc.report.Failed()
		// The first failure is the fault; the fault servers are no homeservers, so the profile
		// query through A fails after it too.
		if tc.report.OK || len(failed) == 0 || failed[0].Step != tc.step || !errors.Is(failed[0].Err, tc.want) || !strings.Contains(failed[0].Detail, tc.detail) {
			t.Errorf("%s: failed steps %+v, want %s first, with %v and %q", tc.report.Server, failed, tc.step, tc.want, tc.detail)
		}
	}
	// The honest fault server passes its key step: the check of signatures is not just "fail".
	for _, s := range reports[4].Steps {
		if s.Step == federation.StepKeys && s.Status != federation.StatusOK {
			t.Errorf("honest key server: %s %s", s.Status, s.Detail)
		}
	}
	if federation.Passed(reports) || !federation.Passed(reports[:2]) {
		t.Error("Passed")
	}
}

// closedPort returns an address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	return closedPortTB(t)
}

func closedPortTB(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentListener accepts connections and never says a word: a server that does not answer.
func silentListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				close(done)
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}
