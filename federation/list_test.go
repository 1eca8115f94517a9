package federation_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/samtalhq/samtal/federation"
)

func TestListLookups(t *testing.T) {
	key := newKey(t)
	d := doc(3, "matrix.a.example", "b.example:8448")
	d.Members[0].EmailDomains = []string{"a.example", "post.a.example"}
	d.Members[0].Localpart = "ext.{local}"
	l, err := federation.Parse(sign(t, d, key), key.Public(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := l.Member("POST.a.example")
	if !ok || m.Name != "Agency matrix" {
		t.Fatalf("Member(POST.a.example) = %+v, %v", m, ok)
	}
	if u, err := m.UserID("Anna.Berg@post.a.example"); err != nil || u != "@ext.anna.berg:matrix.a.example" {
		t.Errorf("UserID = %s, %v", u, err)
	}
	for _, bad := range []string{"anna@b.example", "no-at-sign", "an na@a.example", "anna\u00e9@a.example"} {
		if _, err := m.UserID(bad); !errors.Is(err, federation.ErrInvalidAddress) {
			t.Errorf("UserID(%q) = %v, want ErrInvalidAddress", bad, err)
		}
	}
	m.Localpart = "{local}-{domain}" // as Tchap maps addresses
	if u, err := m.UserID("Anna.Berg@post.a.example"); err != nil || u != "@anna.berg-post.a.example:matrix.a.example" {
		t.Errorf("UserID with {domain} = %s, %v", u, err)
	}
	if b, ok := l.MemberByServer("b.example:8448"); !ok || b.EmailDomains[0] != "b.example" {
		t.Errorf("MemberByServer = %+v, %v", b, ok)
	}
	if l.HasServer("b.example") {
		t.Error("HasServer ignores the port")
	}
	if !l.HasDomain("b.example") || l.HasDomain("c.example") || l.HasDomain("example") {
		t.Error("HasDomain")
	}
	acl := l.ServerACL()
	if !slices.Equal(acl.Allow, []string{"b.example", "matrix.a.example"}) || acl.AllowIPLiterals || acl.ManagedBy != federation.ManagedBy {
		t.Errorf("ServerACL = %+v", acl)
	}
	// Members returns copies.
	l.Members()[0].Servers[0] = "evil.example"
	if !l.HasServer("matrix.a.example") {
		t.Error("Members gave out the list's own slices")
	}
	var none *federation.List
	if none.HasDomain("a.example") || none.HasServer("a.example") {
		t.Error("a nil list allows")
	}
}

func TestSignRefusesInvalid(t *testing.T) {
	key := newKey(t)
	for name, mutate := range map[string]func(d *federation.Document){
		"version 0":               func(d *federation.Document) { d.Version = 0 },
		"no members":              func(d *federation.Document) { d.Members = nil },
		"no expiry":               func(d *federation.Document) { d.ExpiresAt = time.Time{} },
		"expiry before issue":     func(d *federation.Document) { d.ExpiresAt = d.IssuedAt.Add(-time.Second) },
		"no name":                 func(d *federation.Document) { d.Members[0].Name = " " },
		"no server":               func(d *federation.Document) { d.Members[0].Servers = nil },
		"IP server":               func(d *federation.Document) { d.Members[0].Servers = []string{"10.0.0.1:8448"} },
		"upper-case server":       func(d *federation.Document) { d.Members[0].Servers = []string{"A.example"} },
		"bad port":                func(d *federation.Document) { d.Members[0].Servers = []string{"a.example:0"} },
		"server with path":        func(d *federation.Document) { d.Members[0].Servers = []string{"a.example/x"} },
		"bad domain":              func(d *federation.Document) { d.Members[0].EmailDomains = []string{"a..example"} },
		"domain twice":            func(d *federation.Document) { d.Members[1].EmailDomains = d.Members[0].EmailDomains },
		"server twice":            func(d *federation.Document) { d.Members[1].Servers = d.Members[0].Servers },
		"rule without {local}":    func(d *federation.Document) { d.Members[0].Localpart = "fixed" },
		"rule with bad chars":     func(d *federation.Document) { d.Members[0].Localpart = "Ext {local}" },
		"rule with {local} twice": func(d *federation.Document) { d.Members[0].Localpart = "{local}{local}" },
		"long name":               func(d *federation.Document) { d.Members[0].Name = strings.Repeat("x", 201) },
	} {
		d := doc(1, "a.example", "b.example")
		mutate(&d)
		if _, err := federation.Sign(d, key); !errors.Is(err, federation.ErrInvalidList) {
			t.Errorf("%s: Sign = %v, want ErrInvalidList", name, err)
		}
	}
}

func TestKeysPEM(t *testing.T) {
	privPEM, pubPEM, err := federation.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := federation.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := federation.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := federation.Parse(sign(t, doc(1, "a.example"), priv), pub, time.Now(), 0); err != nil {
		t.Errorf("Parse with the PEM keys: %v", err)
	}
	if _, err := federation.ParsePublicKey(privPEM); err == nil {
		t.Error("a private key read as the public key")
	}
	if _, err := federation.ParsePrivateKey([]byte("not pem")); err == nil {
		t.Error("garbage read as a private key")
	}
}

// FuzzParse: whatever the list server sends, Parse returns a list or an error, never
// panics, and a list it returns is consistent.
func FuzzParse(f *testing.F) {
	key := newKey(f)
	f.Add(sign(f, doc(1, "a.example", "b.example:8448"), key))
	f.Add([]byte("eyJhbGciOiJFZERTQSJ9.e30.AAAA"))
	f.Add([]byte(""))
	f.Add([]byte("..."))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := federation.Parse(data, key.Public(), time.Now(), 0)
		if err != nil {
			if federation.Reason(err) == "other" {
				t.Errorf("untyped error: %v", err)
			}
			return
		}
		checkConsistent(t, l)
	})
}

// FuzzDocument: a signed document of any content is checked by Parse, and one Parse accepts
// is consistent: every domain and server leads to the member naming it, the ACL allows
// every server and no IP literal.
func FuzzDocument(f *testing.F) {
	key := newKey(f)
	f.Add(`{"version":1,"issued_at":"2026-01-01T00:00:00Z","expires_at":"2099-01-01T00:00:00Z","members":[{"name":"A","org_number":"1","servers":["a.example"],"email_domains":["a.example"],"contact":"x"}]}`)
	f.Add(`{"version":2,"issued_at":"2026-01-01T00:00:00Z","expires_at":"2099-01-01T00:00:00Z","members":[{"name":"A","org_number":"1","servers":["a.example:1","b.example"],"email_domains":[],"localpart":"x.{local}","contact":""}]}`)
	f.Add(`{"version":1,"members":[{"servers":["1.2.3.4"]}]}`)
	f.Fuzz(func(t *testing.T, payload string) {
		signed, err := federation.SignPayloadForTest([]byte(payload), key)
		if err != nil {
			t.Skip()
		}
		l, err := federation.Parse(signed, key.Public(), time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), 50)
		if err != nil {
			if federation.Reason(err) == "other" {
				t.Errorf("untyped error: %v", err)
			}
			return
		}
		checkConsistent(t, l)
	})
}

func checkConsistent(t *testing.T, l *federation.List) {
	t.Helper()
	acl := l.ServerACL()
	if acl.AllowIPLiterals || len(acl.Allow) == 0 {
		t.Errorf("ACL %+v", acl)
	}
	for _, m := range l.Members() {
		for _, d := range m.EmailDomains {
			if got, ok := l.Member(d); !ok || got.Name != m.Name {
				t.Errorf("domain %s leads to %+v", d, got)
			}
		}
		for _, s := range m.Servers {
			if got, ok := l.MemberByServer(s); !ok || got.Name != m.Name {
				t.Errorf("server %s leads to %+v", s, got)
			}
			if !slices.ContainsFunc(acl.Allow, func(h string) bool { return strings.HasPrefix(s, h) }) {
				t.Errorf("ACL %v misses %s", acl.Allow, s)
			}
		}
	}
}
