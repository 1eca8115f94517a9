package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestLoginOAuthWithoutOAuthAPI: a homeserver without the OAuth 2.0 API (a test server that
// answers 404 to auth_metadata, as Synapse and Dendrite without MSC3861 do) gives a login
// error that says what to do instead. The OAuth flows themselves are tested in the identity
// package against a real OP.
func TestLoginOAuthWithoutOAuthAPI(t *testing.T) {
	clearEnv(t)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
	}))
	defer hs.Close()
	for _, flag := range []string{"--oauth", "--device"} {
		r := samtal(t, nil, "login", flag, "--homeserver", hs.URL)
		if r.code != exitAuth || !strings.Contains(r.stderr, "no OAuth 2.0 API") || !strings.Contains(r.stderr, "SAMTAL_PASSWORD") {
			t.Errorf("%s: exit %d, %s", flag, r.code, r.stderr)
		}
	}
	if r := samtal(t, nil, "login", "--oauth"); r.code != exitUsage {
		t.Errorf("without a homeserver: exit %d, %s", r.code, r.stderr)
	}
}

// TestLoginPasswordThroughTransport: a password session passes through the OAuth transport
// that every command's client now has, and logout still works.
func TestLoginPasswordThroughTransport(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "carol")
	if room := mustSamtal(t, "room", "create"); !strings.HasPrefix(room, "!") {
		t.Errorf("room create printed %q", room)
	}
	mustSamtal(t, "logout")
}
