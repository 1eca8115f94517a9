package identity_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
)

// validLocalpart is the spec's grammar, restricted as the mapping promises.
func validLocalpart(lp string) bool {
	if lp == "" {
		return false
	}
	for _, r := range lp {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '=' || r == '-') {
			return false
		}
	}
	return true
}

func TestMappingTable(t *testing.T) {
	mappingTable(t, identity.NewMemoryAccounts())
}

// mappingTable maps 30 real-world names and addresses through accounts and checks that each
// gives a valid, stable localpart that no other has.
func mappingTable(t *testing.T, accounts identity.Accounts) {
	t.Helper()
	long := strings.Repeat("Åsa-Britt ", 30) // 300 characters
	cases := []struct {
		template string
		claim    string
		want     string // "" when only validity and uniqueness are checked
	}{
		{identity.TchapIDTemplate, "jane.smith@example.se", "jane.smith-example.se"},
		{identity.TchapIDTemplate, "Jane.Smith@Example.SE", "jane.smith-example.se-2"}, // another person, same address in other case
		{identity.TchapIDTemplate, "åsa.öberg@kommun.se", "asa.oberg-kommun.se"},
		{identity.TchapIDTemplate, "erik+case4711@myndighet.se", "erik.case4711-myndighet.se"},
		{identity.TchapIDTemplate, "o'brien@agency.ie", "obrien-agency.ie"},
		{identity.TchapIDTemplate, "anne-marie.lefèvre@ministere.fr", "anne-marie.lefevre-ministere.fr"},
		{identity.TchapIDTemplate, "jürgen.groß@amt.de", "jurgen.gross-amt.de"},
		{identity.TchapIDTemplate, "søren.kierkegaard@kk.dk", "soren.kierkegaard-kk.dk"},
		{identity.TchapIDTemplate, "björn_ängström@lst.se", "bjorn_angstrom-lst.se"},
		{identity.TchapIDTemplate, "jean-françois@gouv.fr", "jean-francois-gouv.fr"},
		{identity.DefaultIDTemplate, "Åsa Öberg", "asa.oberg"},
		{identity.DefaultIDTemplate, "asa.oberg", ""}, // collides with the one above
		{identity.DefaultIDTemplate, "ÅSA ÖBERG", ""}, // and again
		{identity.DefaultIDTemplate, "Zoë Saldaña", "zoe.saldana"},
		{identity.DefaultIDTemplate, "  Pär   Holmgren  ", "par.holmgren"},
		{identity.DefaultIDTemplate, "D'Angelo Rossi", "dangelo.rossi"},
		{identity.DefaultIDTemplate, "Mary O’Neill", "mary.oneill"},
		{identity.DefaultIDTemplate, "Ægir Þórsson", "aegir.thorsson"},
		{identity.DefaultIDTemplate, "Łukasz Żółć", "lukasz.zolc"},
		{identity.DefaultIDTemplate, "José María Aznar", "jose.maria.aznar"},
		{identity.DefaultIDTemplate, "Chloé Dubois-Évrard", "chloe.dubois-evrard"},
		{identity.DefaultIDTemplate, "ADMIN", "admin"},
		{identity.DefaultIDTemplate, "user/with/slashes", "user.with.slashes"},
		{identity.DefaultIDTemplate, "Name (Consultant)", "name.consultant"},
		{identity.DefaultIDTemplate, "first.last@", "first.last"},
		{identity.DefaultIDTemplate, "-leading.dash-", "leading.dash"},
		{identity.DefaultIDTemplate, "tab\tand\nnewline", "tab.and.newline"},
		{identity.DefaultIDTemplate, "Ünal Çelik", "unal.celik"},
		{identity.DefaultIDTemplate, long, ""},
		{identity.DefaultIDTemplate, long + "x", ""}, // shares 255 bytes with the one above
	}
	if len(cases) != 30 {
		t.Fatalf("%d cases", len(cases))
	}
	ctx := context.Background()
	mappers := map[string]*identity.Mapper{}
	mapper := func(tmpl string) *identity.Mapper {
		if m := mappers[tmpl]; m != nil {
			return m
		}
		m := &identity.Mapper{Server: "agency.example.se", IDTemplate: tmpl, Collision: identity.CollisionSuffix, Accounts: accounts}
		mappers[tmpl] = m
		return m
	}
	seen := map[id.UserID]string{}
	for i, c := range cases {
		claims := map[string]any{"email": c.claim, "preferred_username": c.claim, "name": c.claim}
		sub := fmt.Sprintf("sub-%d", i)
		m, err := mapper(c.template).Map(ctx, sub, claims)
		if err != nil {
			t.Fatalf("%q: %v", c.claim, err)
		}
		lp, server, err := m.UserID.Parse()
		if err != nil || server != "agency.example.se" || !validLocalpart(lp) || len(m.UserID) > 255 {
			t.Errorf("%q -> %q is not a valid user ID (%v)", c.claim, m.UserID, err)
		}
		if c.want != "" && lp != c.want {
			t.Errorf("%q -> %q, want %q", c.claim, lp, c.want)
		}
		if other, ok := seen[m.UserID]; ok {
			t.Errorf("%q and %q both map to %s", c.claim, other, m.UserID)
		}
		seen[m.UserID] = c.claim
		// Stable: the same person again, and the same claims through a fresh table.
		again, err := mapper(c.template).Map(ctx, sub, claims)
		if err != nil || again.UserID != m.UserID {
			t.Errorf("%q: second mapping %q, %v", c.claim, again.UserID, err)
		}
		fresh, err := (&identity.Mapper{Server: "agency.example.se", IDTemplate: c.template}).Map(ctx, sub, claims)
		if err != nil {
			t.Fatal(err)
		}
		if c.want != "" && !strings.HasSuffix(c.want, "-2") && fresh.UserID != m.UserID {
			t.Errorf("%q: a fresh table maps to %q, not %q", c.claim, fresh.UserID, m.UserID)
		}
	}
	if got := seen["@asa.oberg-2:agency.example.se"]; got != "asa.oberg" {
		t.Errorf("the second Åsa Öberg is %q", got)
	}
}

func TestMappingCollisionRefuse(t *testing.T) {
	ctx := context.Background()
	m := &identity.Mapper{Server: "example.se"}
	if _, err := m.Map(ctx, "a", map[string]any{"preferred_username": "Åsa Öberg"}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Map(ctx, "b", map[string]any{"preferred_username": "asa.oberg"})
	if !errors.Is(err, identity.ErrCollision) {
		t.Fatalf("got %v, want ErrCollision", err)
	}
}

func TestMappingRefusals(t *testing.T) {
	ctx := context.Background()
	m := &identity.Mapper{Server: "example.se"}
	for _, name := range []string{"", "   ", "'''", "山田太郎", "🙂"} {
		if _, err := m.Map(ctx, "s-"+name, map[string]any{"preferred_username": name}); !errors.Is(err, identity.ErrUnmappable) {
			t.Errorf("%q: got %v, want ErrUnmappable", name, err)
		}
	}
	if _, err := m.Map(ctx, "s", map[string]any{}); !errors.Is(err, identity.ErrUnmappable) {
		t.Errorf("missing claim: got %v, want ErrUnmappable", err)
	}
	if _, err := (&identity.Mapper{Server: "x", IDTemplate: "{{"}).Map(ctx, "s", nil); err == nil {
		t.Error("a broken template was accepted")
	}
}

func TestMappingDisplayName(t *testing.T) {
	m := &identity.Mapper{Server: "example.se", DisplayName: "{{.given_name}} {{.family_name}} ({{.org}})"}
	got, err := m.Map(context.Background(), "s", map[string]any{"preferred_username": "jane",
		"given_name": "Jane", "family_name": "Smith", "org": "Skatteverket"})
	if err != nil {
		t.Fatal(err)
	}
	if got.DisplayName != "Jane Smith (Skatteverket)" {
		t.Errorf("display name %q", got.DisplayName)
	}
}

func FuzzLocalpart(f *testing.F) {
	for _, s := range []string{"jane.smith@example.se", "Åsa Öberg", "o'brien", "", "-", strings.Repeat("é", 400), "a\x00b", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := &identity.Mapper{Server: "example.se", IDTemplate: identity.TchapIDTemplate, Collision: identity.CollisionSuffix}
		got, err := m.Map(context.Background(), "s", map[string]any{"email": s})
		if err != nil {
			if !errors.Is(err, identity.ErrUnmappable) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		lp, _, perr := got.UserID.Parse()
		if perr != nil || !validLocalpart(lp) || len(got.UserID) > 255 {
			t.Fatalf("%q -> %q", s, got.UserID)
		}
		again, _ := identity.Localpart(identity.Tchap(s), 255-2-len("example.se")-4)
		if again != lp {
			t.Fatalf("%q: unstable: %q then %q", s, lp, again)
		}
	})
}
