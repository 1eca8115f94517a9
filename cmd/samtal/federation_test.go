package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFederationCLI: keygen, sign a document, list the members of the published list, and
// check its one member, which does not exist: exit 1 and the failed step in the JSON.
func TestFederationCLI(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "list.key"), filepath.Join(dir, "list.pub")
	mustSamtal(t, "federation", "keygen", priv, pub)
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi, err)
	}
	if r := samtal(t, nil, "federation", "keygen", priv, pub); r.code != exitFail {
		t.Errorf("keygen over an existing key: exit %d, want %d", r.code, exitFail)
	}
	doc := `{"version":1,"issued_at":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + `","expires_at":"` +
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `","members":[{"name":"Nowhere Agency","org_number":"000000-0000",` +
		`"servers":["nosuch.invalid"],"email_domains":["nowhere.example"],"contact":"ops@nowhere.example"}]}`
	docFile := filepath.Join(dir, "list.json")
	if err := os.WriteFile(docFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	signed := mustSamtal(t, "federation", "sign", docFile, "--signing-key", priv)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(signed)) }))
	defer srv.Close()

	out := mustSamtal(t, "federation", "list", "--url", srv.URL, "--key", pub)
	if !strings.Contains(out, "version 1") || !strings.Contains(out, "Nowhere Agency") || !strings.Contains(out, "nosuch.invalid") {
		t.Errorf("list:\n%s", out)
	}

	r := samtal(t, nil, "federation", "check", "--url", srv.URL, "--key", pub, "--timeout", "5s", "--json")
	if r.code != exitFail {
		t.Fatalf("check of a server that does not exist: exit %d, want %d\n%s%s", r.code, exitFail, r.stdout, r.stderr)
	}
	var rep struct {
		OK      bool
		Servers []struct {
			Server, Member string
			Steps          []struct{ Step, Status, Detail string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, r.stdout)
	}
	if rep.OK || len(rep.Servers) != 1 || rep.Servers[0].Member != "Nowhere Agency" || rep.Servers[0].Steps[0].Status != "fail" {
		t.Errorf("report %+v", rep)
	}

	for _, args := range [][]string{
		{"federation"},
		{"federation", "list"},
		{"federation", "bogus"},
		{"federation", "sign", docFile},
		{"federation", "list", "--url", srv.URL, "--key", docFile},
	} {
		if r := samtal(t, nil, args...); r.code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, r.code, exitUsage, r.stderr)
		}
	}
	// A list signed with another key is refused.
	other := filepath.Join(dir, "other.pub")
	mustSamtal(t, "federation", "keygen", filepath.Join(dir, "other.key"), other)
	if r := samtal(t, nil, "federation", "list", "--url", srv.URL, "--key", other); r.code != exitFail || !strings.Contains(r.stderr, "signature") {
		t.Errorf("other key: exit %d, %s", r.code, r.stderr)
	}
}
