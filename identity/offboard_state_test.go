package identity_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// logoutEndpoint is a BackChannelLogout with its database, served on a loopback HTTP
// server, counting the logouts it acted on.
type logoutEndpoint struct {
	url string
	mu  sync.Mutex
	n   int
}

func newLogoutEndpoint(t *testing.T, idp *testIdP, db *dbutil.Database) *logoutEndpoint {
	t.Helper()
	ep := &logoutEndpoint{}
	h, err := identity.NewBackChannelLogout(identity.BackChannelOptions{
		Issuer: idp.issuer, ClientID: "samtal", Keys: oidc.NewRemoteKeySet(context.Background(), idp.jwks.URL), DB: db,
		OnLogout: func(context.Context, identity.LogoutEvent) error {
			ep.mu.Lock()
			ep.n++
			ep.mu.Unlock()
			return nil
		},
	})
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ep.url = srv.URL
	return ep
}

func (ep *logoutEndpoint) post(t *testing.T, token string) int {
	t.Helper()
	resp, err := http.PostForm(ep.url, url.Values{"logout_token": {token}})
	must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func openSQLite(t *testing.T, path string) *dbutil.Database {
	t.Helper()
	db, err := matrix.OpenDatabase(t.Context(), path)
	must(t, err)
	return db
}

// TestLogoutReplayAfterRestart: a logout token accepted before a restart is refused after it
// (the seen token IDs are in the database), and a new one is still accepted.
func TestLogoutReplayAfterRestart(t *testing.T) {
	idp := newTestIdP(t)
	path := filepath.Join(t.TempDir(), "samtal.db")
	token := idp.sign(t, idp.key, idp.claims("jti-before-restart"))

	db := openSQLite(t, path)
	before := newLogoutEndpoint(t, idp, db)
	if code := before.post(t, token); code != http.StatusOK {
		t.Fatalf("the token before the restart: %d, want 200", code)
	}
	must(t, db.Close())

	db = openSQLite(t, path)
	defer db.Close()
	after := newLogoutEndpoint(t, idp, db)
	if code := after.post(t, token); code != http.StatusBadRequest {
		t.Fatalf("the same token after a restart: %d, want 400 (replayed)", code)
	}
	if code := after.post(t, idp.sign(t, idp.key, idp.claims("jti-after-restart"))); code != http.StatusOK {
		t.Fatalf("a new token after the restart: %d, want 200", code)
	}
	if before.n != 1 || after.n != 1 {
		t.Fatalf("logouts acted on: %d before, %d after the restart; want 1 and 1", before.n, after.n)
	}
}

// scimEndpoint is a SCIM handler with its database on a loopback server, recording whom it
// deprovisioned.
type scimEndpoint struct {
	*identity.SCIM
	url  string
	mu   sync.Mutex
	gone []id.UserID
}

func newSCIMEndpoint(t *testing.T, db *dbutil.Database) *scimEndpoint {
	t.Helper()
	ep := &scimEndpoint{}
	var err error
	ep.SCIM, err = identity.NewSCIM(identity.SCIMOptions{Token: "scim-token", ServerName: "agency-a.test", DB: db,
		OnDeprovision: func(_ context.Context, u id.UserID, _ string) error {
			ep.mu.Lock()
			ep.gone = append(ep.gone, u)
			ep.mu.Unlock()
			return nil
		}})
	must(t, err)
	srv := httptest.NewServer(ep.SCIM)
	t.Cleanup(srv.Close)
	ep.url = srv.URL
	return ep
}

const patchInactive = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`

// rosterOf is who the SCIM source lists, and whether active.
func rosterOf(t *testing.T, s identity.Source) map[id.UserID]bool {
	t.Helper()
	r, err := s.Roster(t.Context())
	must(t, err)
	out := map[id.UserID]bool{}
	for _, p := range r.People {
		out[p.UserID] = p.Active
	}
	return out
}

// TestSCIMRestart: the users the IdP provisioned are still there after a restart: read,
// listed, deprovisioned, and their userName still taken.
func TestSCIMRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "samtal.db")
	db := openSQLite(t, path)
	before := newSCIMEndpoint(t, db)
	anna := scimDo(t, before.url, "scim-token", http.MethodPost, "/Users",
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"anna","active":true,"emails":[{"value":"anna@agency-a.test","primary":true}]}`, http.StatusCreated)
	scimDo(t, before.url, "scim-token", http.MethodPost, "/Users", `{"userName":"bo","active":true}`, http.StatusCreated)
	must(t, db.Close())

	db = openSQLite(t, path)
	defer db.Close()
	after := newSCIMEndpoint(t, db)
	rid := anna["id"].(string)
	got := scimDo(t, after.url, "scim-token", http.MethodGet, "/Users/"+rid, "", http.StatusOK)
	if got["userName"] != "anna" || got["active"] != true {
		t.Fatalf("anna after the restart: %v", got)
	}
	if list := scimDo(t, after.url, "scim-token", http.MethodGet, "/Users", "", http.StatusOK); list["totalResults"] != float64(2) {
		t.Fatalf("users after the restart: %v, want 2", list)
	}
	scimDo(t, after.url, "scim-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusConflict)
	scimDo(t, after.url, "scim-token", http.MethodPatch, "/Users/"+rid, patchInactive, http.StatusOK)
	if len(after.gone) != 1 || after.gone[0] != "@anna:agency-a.test" {
		t.Fatalf("deprovisioned after the restart: %v, want anna", after.gone)
	}
	r, err := after.Roster(t.Context())
	must(t, err)
	if len(r.People) != 2 {
		t.Fatalf("roster after the restart: %+v", r.People)
	}
	for _, p := range r.People {
		if p.UserID == "@anna:agency-a.test" && (p.Active || p.Email != "anna@agency-a.test") {
			t.Fatalf("anna in the roster: %+v, want inactive with her address", p)
		}
	}
}

// TestOffboardStatePostgres: two instances sharing a PostgreSQL database (each its own
// connection pool) agree: a user one provisioned the other reads and deprovisions, and a
// logout token one accepted the other refuses, also when both get it at the same moment.
func TestOffboardStatePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	dsn := pgtest.New(t)
	open := func() *dbutil.Database {
		db, err := matrix.OpenDatabase(t.Context(), dsn)
		must(t, err)
		t.Cleanup(func() { db.Close() })
		return db
	}
	dbA, dbB := open(), open()
	scimA, scimB := newSCIMEndpoint(t, dbA), newSCIMEndpoint(t, dbB)
	created := scimDo(t, scimA.url, "scim-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusCreated)
	rid := created["id"].(string)
	scimDo(t, scimB.url, "scim-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusConflict)
	scimDo(t, scimB.url, "scim-token", http.MethodPatch, "/Users/"+rid, patchInactive, http.StatusOK)
	if active, ok := rosterOf(t, scimA)["@anna:agency-a.test"]; !ok || active {
		t.Fatalf("instance A's roster after B deprovisioned anna: %v", rosterOf(t, scimA))
	}
	scimDo(t, scimA.url, "scim-token", http.MethodDelete, "/Users/"+rid, "", http.StatusNoContent)
	scimDo(t, scimB.url, "scim-token", http.MethodGet, "/Users/"+rid, "", http.StatusNotFound)

	idp := newTestIdP(t)
	epA, epB := newLogoutEndpoint(t, idp, dbA), newLogoutEndpoint(t, idp, dbB)
	token := idp.sign(t, idp.key, idp.claims("jti-shared"))
	if code := epA.post(t, token); code != http.StatusOK {
		t.Fatalf("A: %d, want 200", code)
	}
	if code := epB.post(t, token); code != http.StatusBadRequest {
		t.Fatalf("B, the token A accepted: %d, want 400", code)
	}
	// The same new token to both at once: exactly one acts on it.
	both := idp.sign(t, idp.key, idp.claims("jti-both"))
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i, ep := range []*logoutEndpoint{epA, epB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.PostForm(ep.url, url.Values{"logout_token": {both}})
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if (codes[0] == http.StatusOK) == (codes[1] == http.StatusOK) {
		t.Fatalf("one token to both instances at once: %v, want exactly one 200", codes)
	}
	if epA.n+epB.n != 2 {
		t.Fatalf("logouts acted on: %d, want 2", epA.n+epB.n)
	}
}
