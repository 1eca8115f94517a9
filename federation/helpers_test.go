package federation_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/samtalhq/samtal/federation"
)

// newKey returns a fresh Ed25519 signing key.
func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// doc is a valid list of version v naming the given servers, one member per server, each
// with the mail domain "<first label>.example" (a.localhost:1234 -> a.example).
func doc(v uint64, servers ...string) federation.Document {
	now := time.Now()
	d := federation.Document{Version: v, IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(24 * time.Hour)}
	for _, s := range servers {
		label := s
		for i, r := range s {
			if r == '.' || r == ':' {
				label = s[:i]
				break
			}
		}
		d.Members = append(d.Members, federation.Member{
			Name: "Agency " + label, OrgNumber: "202100-0000", Servers: []string{s},
			EmailDomains: []string{label + ".example"}, Contact: "ops@" + label + ".example",
		})
	}
	return d
}

func sign(t testing.TB, d federation.Document, key crypto.Signer) []byte {
	t.Helper()
	b, err := federation.Sign(d, key)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return b
}

// listServer is a real HTTP server publishing whatever body it is given.
type listServer struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
}

func newListServer(t testing.TB, body []byte) *listServer {
	t.Helper()
	ls := &listServer{body: body}
	ls.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ls.mu.Lock()
		b := ls.body
		ls.mu.Unlock()
		w.Header().Set("Content-Type", "application/jose")
		_, _ = w.Write(b)
	}))
	t.Cleanup(ls.Close)
	return ls
}

func (ls *listServer) publish(b []byte) {
	ls.mu.Lock()
	ls.body = b
	ls.mu.Unlock()
}

func timeNow() time.Time { return time.Now() }
