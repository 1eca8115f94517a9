package identity_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/samtalhq/samtal/identity"
)

// masTestServer follows the published admin API of matrix-authentication-service
// (docs/api/spec.json, docs/topics/admin-api.md): the client credentials grant at
// /oauth2/token (client_secret_basic, scope urn:mas:admin), JSON:API documents under
// /api/admin/v1, cursor pagination (page[first], page[after], links.next), errors as
// {"errors":[{"title":...}]}. No MAS runs here; this is the API's description.
type masTestServer struct {
	*httptest.Server
	mu       sync.Mutex
	tokens   int                          // access tokens granted
	users    map[string]string            // username -> MAS user ID
	sessions map[string]map[string]string // kind -> session ID -> owner's MAS user ID
	finished map[string]bool              // kind/ID
	locked   map[string]bool
	deact    map[string]any // MAS user ID -> skip_erase
}

const masClientID, masClientSecret = "01J44RKQYM4G3TNVANTMTDYTX6", "client-secret-not-in-errors"

func newMASTestServer(t *testing.T) *masTestServer {
	m := &masTestServer{users: map[string]string{"leaver": "01LEAVER", "stayer": "01STAYER"},
		sessions: map[string]map[string]string{}, finished: map[string]bool{}, locked: map[string]bool{}, deact: map[string]any{}}
	add := func(kind, owner string, n int) {
		if m.sessions[kind] == nil {
			m.sessions[kind] = map[string]string{}
		}
		for i := range n {
			m.sessions[kind][fmt.Sprintf("%s-%s-%04d", kind[:3], owner, i)] = owner
		}
	}
	add("compat-sessions", "01LEAVER", 250) // three pages of 100
	add("compat-sessions", "01STAYER", 5)
	add("oauth2-sessions", "01LEAVER", 3)
	add("user-sessions", "01LEAVER", 1)
	add("user-sessions", "01STAYER", 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != masClientID || pass != masClientSecret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"client authentication failed"}`)
			return
		}
		if r.FormValue("grant_type") != "client_credentials" || r.FormValue("scope") != "urn:mas:admin" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_request"}`)
			return
		}
		m.mu.Lock()
		m.tokens++
		tok := fmt.Sprintf("mat_admin_%d", m.tokens)
		m.mu.Unlock()
		adminJSON(w, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300, "scope": "urn:mas:admin"})
	})
	api := http.NewServeMux()
	mux.Handle("/api/admin/v1/", http.StripPrefix("/api/admin/v1", api))
	api.HandleFunc("GET /users", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, map[string]any{"data": []any{}, "links": map[string]string{"self": r.URL.String()}})
	})
	api.HandleFunc("GET /users/by-username/{name}", func(w http.ResponseWriter, r *http.Request) {
		uid, ok := m.users[r.PathValue("name")]
		if !ok {
			masError(w, http.StatusNotFound, fmt.Sprintf("User with username %q not found", r.PathValue("name")))
			return
		}
		adminJSON(w, map[string]any{"data": map[string]any{"type": "user", "id": uid,
			"attributes": map[string]any{"username": r.PathValue("name"), "locked_at": nil, "deactivated_at": nil}}})
	})
	api.HandleFunc("POST /users/{id}/lock", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.locked[r.PathValue("id")] = true
		m.mu.Unlock()
		adminJSON(w, map[string]any{"data": map[string]any{"type": "user", "id": r.PathValue("id")}})
	})
	api.HandleFunc("POST /users/{id}/deactivate", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			masError(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		m.mu.Lock()
		m.deact[r.PathValue("id")] = body["skip_erase"]
		m.mu.Unlock()
		adminJSON(w, map[string]any{"data": map[string]any{"type": "user", "id": r.PathValue("id")}})
	})
	api.HandleFunc("GET /{kind}", func(w http.ResponseWriter, r *http.Request) {
		kind := r.PathValue("kind")
		q := r.URL.Query()
		first, err := strconv.Atoi(q.Get("page[first]"))
		if err != nil || first < 1 || q.Get("filter[status]") != "active" || q.Get("filter[user]") == "" {
			masError(w, http.StatusBadRequest, "want page[first], filter[status]=active and filter[user]")
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		var ids []string
		for sid, owner := range m.sessions[kind] {
			if owner == q.Get("filter[user]") && !m.finished[kind+"/"+sid] && sid > q.Get("page[after]") {
				ids = append(ids, sid)
			}
		}
		slices.Sort(ids)
		links := map[string]string{"self": r.URL.String()}
		if len(ids) > first {
			ids = ids[:first]
			links["next"] = "/api/admin/v1/" + kind + "?page[after]=" + ids[len(ids)-1] + "&page[first]=" + strconv.Itoa(first)
		}
		data := []any{}
		for _, sid := range ids {
			data = append(data, map[string]any{"type": strings.TrimSuffix(kind, "s"), "id": sid,
				"attributes": map[string]any{"user_id": q.Get("filter[user]"), "finished_at": nil}, "meta": map[string]any{"page": map[string]string{"cursor": sid}}})
		}
		adminJSON(w, map[string]any{"data": data, "links": links})
	})
	api.HandleFunc("POST /{kind}/{id}/finish", func(w http.ResponseWriter, r *http.Request) {
		kind, sid := r.PathValue("kind"), r.PathValue("id")
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.sessions[kind][sid]; !ok {
			masError(w, http.StatusNotFound, "session not found")
			return
		}
		if m.finished[kind+"/"+sid] {
			masError(w, http.StatusBadRequest, "session is already finished")
			return
		}
		m.finished[kind+"/"+sid] = true
		adminJSON(w, map[string]any{"data": map[string]any{"type": strings.TrimSuffix(kind, "s"), "id": sid}})
	})
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer mat_admin_")
			if !ok || tok == "" {
				masError(w, http.StatusUnauthorized, "Missing or invalid access token")
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(m.Close)
	return m
}

func masError(w http.ResponseWriter, status int, title string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"title": title}}})
}

// TestMASAdmin: Logout finishes every active session of the leaver (all pages, all three
// kinds) and no one else's; Lock and Deactivate reach the user found by username; one token
// serves every call; a refused grant is a typed error without the secret.
func TestMASAdmin(t *testing.T) {
	mas := newMASTestServer(t)
	ctx := t.Context()
	a, err := identity.NewMAS(identity.MASOptions{URL: mas.URL, ClientID: masClientID, ClientSecret: masClientSecret, ServerName: "agency-a.test"})
	must(t, err)
	var _ identity.AccountAdmin = a

	missing, err := a.Missing(ctx, []identity.ActionKind{identity.ActionLogout, identity.ActionLock, identity.ActionSuspend, identity.ActionDeactivate})
	must(t, err)
	if len(missing) != 1 || missing[0].Action != identity.ActionSuspend {
		t.Fatalf("Missing = %v, want only suspend", missing)
	}
	must(t, a.Logout(ctx, "@leaver:agency-a.test"))
	mas.mu.Lock()
	for kind, sessions := range mas.sessions {
		for sid, owner := range sessions {
			if done := mas.finished[kind+"/"+sid]; done != (owner == "01LEAVER") {
				t.Errorf("%s %s of %s: finished %v", kind, sid, owner, done)
			}
		}
	}
	mas.mu.Unlock()
	must(t, a.Logout(ctx, "@leaver:agency-a.test")) // nothing left to finish: no error
	must(t, a.Lock(ctx, "@leaver:agency-a.test"))
	must(t, a.Deactivate(ctx, "@leaver:agency-a.test", false))
	if !mas.locked["01LEAVER"] || mas.deact["01LEAVER"] != true {
		t.Fatalf("locked %v, deactivated with skip_erase %v", mas.locked, mas.deact)
	}
	if mas.tokens != 1 {
		t.Errorf("%d admin tokens granted, want 1 (reused until it expires)", mas.tokens)
	}

	var ae *identity.AdminError
	if err := a.Lock(ctx, "@nobody:agency-a.test"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || errors.Is(err, identity.ErrAdminUnsupported) {
		t.Fatalf("Lock of an unknown user = %v, want an AdminError 404", err)
	}
	if err := a.Suspend(ctx, "@leaver:agency-a.test"); !errors.Is(err, identity.ErrAdminUnsupported) {
		t.Fatalf("Suspend = %v, want ErrAdminUnsupported", err)
	}
	if err := a.Logout(ctx, "@leaver:other.test"); !errors.Is(err, identity.ErrAdminUnsupported) {
		t.Fatalf("Logout of another server's user = %v", err)
	}

	bad, err := identity.NewMAS(identity.MASOptions{URL: mas.URL, ClientID: masClientID, ClientSecret: "wrong-secret", ServerName: "agency-a.test"})
	must(t, err)
	err = bad.Logout(ctx, "@leaver:agency-a.test")
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.ErrCode != "invalid_client" {
		t.Fatalf("Logout with a wrong client secret = %v, want an AdminError 401 invalid_client", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), masClientSecret) {
		t.Fatalf("the error shows the client secret: %v", err)
	}
	// MAS down: the token endpoint does not answer.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	gone, err := identity.NewMAS(identity.MASOptions{URL: down.URL, ClientID: masClientID, ClientSecret: masClientSecret, ServerName: "agency-a.test"})
	must(t, err)
	err = gone.Lock(ctx, "@leaver:agency-a.test")
	if err == nil || strings.Contains(err.Error(), masClientSecret) || strings.Contains(err.Error(), "%!") {
		t.Fatalf("Lock with MAS down = %v, want a clean error without the secret", err)
	}
	if _, err := identity.NewMAS(identity.MASOptions{URL: "ftp://x", ClientID: "c", ClientSecret: "s", ServerName: "a"}); err == nil {
		t.Fatal("NewMAS with an ftp URL: no error")
	}
}

// TestMASAdminNotExposed: a MAS whose listeners do not serve the adminapi resource answers
// 404 (no JSON:API document): Missing names every action, and an action is a CapabilityError.
func TestMASAdminNotExposed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" {
			adminJSON(w, map[string]any{"access_token": "mat_x", "token_type": "Bearer", "expires_in": 300})
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	a, err := identity.NewMAS(identity.MASOptions{URL: srv.URL, ClientID: "c", ClientSecret: "s", ServerName: "agency-a.test"})
	must(t, err)
	missing, err := a.Missing(t.Context(), []identity.ActionKind{identity.ActionLogout, identity.ActionLock})
	must(t, err)
	if len(missing) != 2 || missing[0].Status != http.StatusNotFound {
		t.Fatalf("Missing = %v, want logout and lock (404)", missing)
	}
	var ce *identity.CapabilityError
	if err := a.Lock(t.Context(), "@leaver:agency-a.test"); !errors.As(err, &ce) {
		t.Fatalf("Lock = %v, want a CapabilityError", err)
	}
}
