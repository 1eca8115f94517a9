package matrix_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestDiscovery finds the homeserver from the user's server name through
// /.well-known/matrix/client. The well-known document is served by a small HTTPS server of the
// test's own (an agency's web server, which Dendrite is not); the login then goes to the real
// Dendrite it names.
func TestDiscovery(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	wellKnown := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/matrix/client" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"m.homeserver":{"base_url":%q}}`, srv.URL)
	}))
	defer wellKnown.Close()
	serverName := strings.TrimPrefix(wellKnown.URL, "https://")

	c := newClientWith(t, matrix.Options{
		UserID:     id.NewUserID("alice", serverName),
		HTTPClient: wellKnown.Client(), // trusts the test server's certificate
		Login:      matrix.Password("alice", pw),
		DB:         testDB(t),
	})
	if c.UserID() != srv.UserID("alice") || c.Session().HomeserverURL != srv.URL {
		t.Fatalf("logged in as %s at %s, want %s at %s", c.UserID(), c.Session().HomeserverURL, srv.UserID("alice"), srv.URL)
	}

	// A server whose well-known document is broken gives a clear error, not a login elsewhere.
	broken := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"m.homeserver":`)
	}))
	defer broken.Close()
	_, err := matrix.New(t.Context(), matrix.Options{
		UserID: id.NewUserID("alice", strings.TrimPrefix(broken.URL, "https://")), HTTPClient: broken.Client(),
		Login: matrix.Password("alice", pw), DB: testDB(t), Logger: quietLogger(t),
	})
	if err == nil || !strings.Contains(err.Error(), "discover") {
		t.Fatalf("broken well-known: %v, want a discovery error", err)
	}
	if errors.Is(err, matrix.ErrLogin) {
		t.Fatalf("broken well-known reached login: %v", err)
	}
}
