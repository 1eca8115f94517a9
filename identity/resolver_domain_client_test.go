package identity_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestDomainResolverClientWellKnown: the client API base URL an agency publishes in
// .well-known/matrix/client is found and checked (it must answer /versions) and named in the
// answer; a broken document, a redirect elsewhere, a base URL that is no client API, and a
// timeout are each a clear error, never a guess. The agencies' names on port 443 reach one
// local HTTPS server that plays each agency's web server (the dialer is the seam; the servers
// and client are real); everything else is dialled as asked.
func TestDomainResolverClientWellKnown(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	web := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		switch {
		case r.URL.Path == "/.well-known/matrix/server":
			http.NotFound(w, r) // no delegation: the client document is what is published
		case r.URL.Path == "/_matrix/client/versions" && host == "matrix.good.test":
			fmt.Fprint(w, `{"versions":["v1.11"]}`)
		case r.URL.Path != "/.well-known/matrix/client":
			http.NotFound(w, r)
		case host == "good.test":
			fmt.Fprint(w, `{"m.homeserver":{"base_url":"https://matrix.good.test/"}}`)
		case host == "localhost": // the test homeserver's name, without its port
			fmt.Fprintf(w, `{"m.homeserver":{"base_url":%q}}`, srv.URL)
		case host == "broken.test":
			fmt.Fprint(w, `{"m.homeserver": {"base_url": `)
		case host == "nobase.test":
			fmt.Fprint(w, `{"m.homeserver": {}}`)
		case host == "notaurl.test":
			fmt.Fprint(w, `{"m.homeserver": {"base_url": "matrix.notaurl.test"}}`)
		case host == "redirect.test":
			http.Redirect(w, r, "https://attacker.test/.well-known/matrix/client", http.StatusFound)
		case host == "sameredirect.test":
			http.Redirect(w, r, "https://sameredirect.test/other", http.StatusFound)
		case host == "notmatrix.test":
			fmt.Fprint(w, `{"m.homeserver": {"base_url": "https://www.notmatrix.test"}}`)
		case host == "slow.test":
			<-r.Context().Done()
		case host == "error.test":
			http.Error(w, "oops", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer web.Close()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasSuffix(addr, ":443") {
				addr = web.Listener.Addr().String()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	r := identity.NewDomainResolver(srv.NewClient(t, "officer"), identity.StaticDomains{
		"agency-a.test": {ServerName: srv.ServerName}}, identity.DomainOptions{HTTPClient: hc})

	base, err := r.ClientAPI(ctx, "good.test")
	if err != nil || base != "https://matrix.good.test" {
		t.Fatalf("ClientAPI(good.test) = %q, %v", base, err)
	}
	if base, err := r.ClientAPI(ctx, "absent.test"); err != nil || base != "" {
		t.Fatalf("ClientAPI where nothing is published = %q, %v; want nothing", base, err)
	}
	// A redirect within the host is followed (here to a 404: nothing published).
	if base, err := r.ClientAPI(ctx, "sameredirect.test"); err != nil || base != "" {
		t.Fatalf("ClientAPI with a redirect within the host = %q, %v; want nothing", base, err)
	}
	if base, err := r.ClientAPI(ctx, "127.0.0.1:8448"); err != nil || base != "" {
		t.Fatalf("ClientAPI of an IP literal = %q, %v; want nothing", base, err)
	}
	for server, want := range map[string]error{
		"broken.test":    identity.ErrWellKnown,
		"nobase.test":    identity.ErrWellKnown,
		"notaurl.test":   identity.ErrWellKnown,
		"redirect.test":  identity.ErrWellKnown,
		"notmatrix.test": identity.ErrWellKnown,
		"error.test":     identity.ErrWellKnown,
		"slow.test":      identity.ErrUnavailable,
	} {
		_, err := r.ClientAPI(ctx, server)
		if !errors.Is(err, want) || errors.Is(err, identity.ErrNotFound) {
			t.Errorf("%s: %v, want %v", server, err, want)
		}
		if server == "slow.test" && !strings.Contains(fmt.Sprint(err), "timed out") {
			t.Errorf("%s: %v, want it to say it timed out", server, err)
		}
	}

	// Resolve: the test homeserver's name publishes its client API; the answer names it, and
	// the profile lookup confirms the account.
	srv.RegisterUser(t, "anna")
	m, err := identity.NewDirectory(identity.DirectoryOptions{}, r).Lookup(ctx, "anna@agency-a.test")
	if err != nil {
		t.Fatal(err)
	}
	if m.UserID != srv.UserID("anna") || !strings.Contains(m.Detail, "client API at "+srv.URL) {
		t.Fatalf("Lookup = %+v, want anna with the client API named", m)
	}
	// A broken client document stops the lookup, even though the account exists.
	broken := identity.NewDomainResolver(srv.NewClient(t, "officer2"), identity.StaticDomains{"broken.test": {ServerName: "broken.test"}},
		identity.DomainOptions{HTTPClient: hc})
	if _, err := identity.NewDirectory(identity.DirectoryOptions{}, broken).Lookup(ctx, "anna@broken.test"); !errors.Is(err, identity.ErrWellKnown) {
		t.Fatalf("Lookup at a domain with a broken client document: %v, want ErrWellKnown", err)
	}
}
