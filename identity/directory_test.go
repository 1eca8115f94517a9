package identity_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

func TestParseAddressBadInput(t *testing.T) {
	for _, in := range []string{
		"", "anna.berg", "anna.berg@", "@agency.se", "Anna <anna@agency.se>",
		"anna@myndighet.åäö.se", // IDN: the error names the xn-- form
		"anna@nodot", "anna berg@agency.se", strings.Repeat("a", 250) + "@x.se",
	} {
		if _, err := identity.ParseAddress(in); !errors.Is(err, identity.ErrInvalidAddress) {
			t.Errorf("ParseAddress(%q) = %v, want ErrInvalidAddress", in, err)
		}
	}
	_, err := identity.ParseAddress("anna@myndighet.åäö.se")
	if err == nil || !strings.Contains(err.Error(), "xn--") {
		t.Errorf("IDN error %v does not name the ASCII form", err)
	}
	a, err := identity.ParseAddress(" Anna.Berg@Agency.SE ")
	if err != nil || a.Key() != "anna.berg@agency.se" {
		t.Errorf("ParseAddress = %+v, %v", a, err)
	}
	d := identity.NewDirectory(identity.DirectoryOptions{}, identity.StaticDirectory{})
	if _, err := d.Lookup(t.Context(), "no-at-sign"); !errors.Is(err, identity.ErrInvalidAddress) {
		t.Errorf("Lookup without @: %v", err)
	}
}

// TestDirectoryChain: resolvers are asked in order, the first that knows answers and is named
// as the source; an outage of one is ErrUnavailable, not a not-found; answers are cached.
func TestDirectoryChain(t *testing.T) {
	var asked atomic.Int32
	down := identity.ResolverFunc{ResolverName: "down", Func: func(context.Context, identity.Address) (identity.Match, error) {
		asked.Add(1)
		return identity.Match{}, fmt.Errorf("%w: connection refused", identity.ErrUnavailable)
	}}
	static := identity.StaticDirectory{"anna@agency-a.test": "@anna:agency-a.test"}
	d := identity.NewDirectory(identity.DirectoryOptions{}, down, static)
	ctx := t.Context()
	m, err := d.Lookup(ctx, "ANNA@agency-a.test")
	if err != nil || m.UserID != "@anna:agency-a.test" || m.Source != "static" || m.Cached {
		t.Fatalf("Lookup = %+v, %v", m, err)
	}
	m, err = d.Lookup(ctx, "anna@agency-a.test")
	if err != nil || !m.Cached || asked.Load() != 1 {
		t.Fatalf("second Lookup = %+v, %v (down asked %d times, want 1)", m, err, asked.Load())
	}
	// Nobody knows it and one resolver is down: unavailable, not not-found.
	if _, err := d.Lookup(ctx, "bo@agency-a.test"); !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("with a resolver down: %v, want ErrUnavailable", err)
	}
	// All answer and none knows it: a *NotFoundError naming who was asked.
	d = identity.NewDirectory(identity.DirectoryOptions{}, static)
	_, err = d.Lookup(ctx, "bo@agency-a.test")
	var nf *identity.NotFoundError
	if !errors.As(err, &nf) || len(nf.Tried) != 1 || nf.Tried[0] != "static" {
		t.Fatalf("not found: %v", err)
	}
}

func TestStaticDirectoryFiles(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "people.csv")
	yamlPath := filepath.Join(dir, "people.yaml")
	must(t, os.WriteFile(csvPath, []byte("email,user_id\n# a comment\nAnna@agency-a.test,@anna:agency-a.test\nbo@agency-a.test, @bo:agency-a.test\n"), 0o600))
	must(t, os.WriteFile(yamlPath, []byte("anna@agency-a.test: \"@anna:agency-a.test\"\n"), 0o600))
	for _, p := range []string{csvPath, yamlPath} {
		s, err := identity.LoadStaticDirectory(p)
		if err != nil || s["anna@agency-a.test"] != "@anna:agency-a.test" {
			t.Fatalf("%s: %v, %v", p, s, err)
		}
	}
	bad := map[string]string{
		"bad-id.csv":   "anna@agency-a.test,anna\n",
		"no-at.csv":    "anna,@anna:agency-a.test\n",
		"conflict.csv": "anna@a.test,@anna:a.test\nANNA@a.test,@other:a.test\n",
		"columns.csv":  "anna@a.test\n",
		"broken.yaml":  "anna@a.test: [\n",
		"bad-id.yaml":  "anna@a.test: nobody\n",
		"people.txt":   "",
	}
	for name, body := range bad {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(body), 0o600))
		if _, err := identity.LoadStaticDirectory(p); err == nil {
			t.Errorf("%s: loaded, want an error", name)
		}
	}
}

// TestDomainResolverBadInput: a domain whose .well-known is broken or redirects elsewhere, and
// a profile lookup that times out, are clear errors and never a guess.
func TestDomainResolverBadInput(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()

	// The agencies' domains (*.test) resolve to one local HTTPS server that serves each one's
	// .well-known as the test needs: the dialer is the seam, the server and client are real.
	wk := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Host {
		case "broken.test":
			fmt.Fprint(w, `{"m.server": `)
		case "empty.test":
			fmt.Fprint(w, `{}`)
		case "redirect.test":
			http.Redirect(w, r, "https://attacker.test/.well-known/matrix/server", http.StatusFound)
		case "error.test":
			http.Error(w, "oops", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer wk.Close()
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, wk.Listener.Addr().String())
		},
	}}
	c := srv.NewClient(t, "officer")
	table := identity.StaticDomains{"broken.test": {}, "empty.test": {}, "redirect.test": {}, "error.test": {}}
	r := identity.NewDomainResolver(c, table, identity.DomainOptions{HTTPClient: hc})
	for _, domain := range []string{"broken.test", "empty.test", "redirect.test", "error.test"} {
		_, err := identity.NewDirectory(identity.DirectoryOptions{}, r).Lookup(ctx, "anna@"+domain)
		if !errors.Is(err, identity.ErrWellKnown) || errors.Is(err, identity.ErrNotFound) {
			t.Errorf("%s: %v, want ErrWellKnown", domain, err)
		}
	}

	// The profile lookup hangs: the own homeserver is reached through a proxy that holds
	// profile requests until they are given up (the injected fault, said here).
	target, _ := url.Parse(srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/profile/") {
			<-r.Context().Done()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer slow.Close()
	_, pw := srv.RegisterUser(t, "slow-officer")
	db, err := matrix.OpenDatabase(ctx, filepath.Join(t.TempDir(), "slow.db"))
	must(t, err)
	defer db.Close()
	sc, err := matrix.New(ctx, matrix.Options{HomeserverURL: slow.URL, Login: matrix.Password("slow-officer", pw), DB: db})
	must(t, err)
	defer sc.Close()
	r = identity.NewDomainResolver(sc, identity.StaticDomains{"agency-a.test": {ServerName: srv.ServerName}},
		identity.DomainOptions{LookupTimeout: 200 * time.Millisecond})
	_, err = identity.NewDirectory(identity.DirectoryOptions{}, r).Lookup(ctx, "anna@agency-a.test")
	if !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrNotFound) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("profile lookup that hangs: %v, want ErrUnavailable (timed out)", err)
	}
}

// TestUserDirectory: the own server's user directory finds a user whose display name holds
// the address; two such users are ambiguous, never a pick.
func TestUserDirectory(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	c := srv.NewClient(t, "officer")
	// Dendrite's directory lists only users who share a room with the one searching (the spec
	// allows that): everyone is in the agency's public lobby.
	lobby, err := c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.PublicRoom})
	must(t, err)
	setName := func(localpart, name string) id.UserID {
		cli := srv.Client(t, localpart)
		must(t, cli.SetDisplayName(ctx, name))
		_, err := cli.JoinRoomByID(ctx, lobby)
		must(t, err)
		return cli.UserID
	}
	anna := setName("anna", "Anna Berg <anna.berg@agency-a.test>")
	setName("bo1", "bo@agency-a.test")
	setName("bo2", "Bo Ek <bo@agency-a.test>")
	setName("cecilia", "Cecilia (cecilia@agency-a.test)")
	d := identity.NewDirectory(identity.DirectoryOptions{}, identity.NewUserDirectory(c))
	var m identity.Match
	matrixtest.Eventually(t, func() error { // the directory is updated after the profile change
		var err error
		m, err = d.Lookup(ctx, "anna.berg@agency-a.test")
		if err != nil {
			d.Forget("anna.berg@agency-a.test")
		}
		return err
	})
	if m.UserID != anna || m.Source != "user-directory" {
		t.Fatalf("Lookup = %+v", m)
	}
	if _, err := d.Lookup(ctx, "bo@agency-a.test"); !errors.Is(err, identity.ErrAmbiguous) {
		t.Fatalf("two users: %v, want ErrAmbiguous", err)
	}
	if _, err := d.Lookup(ctx, "cecilia@agency-a.test"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("address not in <>: %v, want ErrNotFound", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
