package identity_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// adminToken is the access token of the administrator in the admin API test servers.
const adminToken = "admin-token-not-a-secret"

// matrixErr answers a Matrix error.
func adminErrJSON(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errcode": code, "error": msg})
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// adminServer is the shared part of the test servers that stand in for a homeserver's admin
// API (no Synapse runs here): the client API's whoami, so that a samtal client can use the
// administrator's token, and the bearer token check every admin endpoint makes (M_MISSING_TOKEN,
// M_UNKNOWN_TOKEN), with anything not routed answered 404 M_UNRECOGNIZED as Synapse does.
func adminServer(t *testing.T, admin id.UserID, mux *http.ServeMux) *httptest.Server {
	t.Helper()
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, map[string]string{"user_id": string(admin), "device_id": "ADMINDEV"})
	})
	mux.HandleFunc("GET /_matrix/client/versions", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, map[string]any{"versions": []string{"v1.11", "v1.18"}})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/client/versions" {
			mux.ServeHTTP(w, r)
			return
		}
		switch r.Header.Get("Authorization") {
		case "":
			adminErrJSON(w, http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
			return
		case "Bearer " + adminToken:
		default:
			adminErrJSON(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unrecognised access token")
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			adminErrJSON(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// adminClient is a samtal client of the administrator at the test server srv.
func adminClient(t *testing.T, srv *httptest.Server, admin id.UserID) *matrix.Client {
	t.Helper()
	db, err := matrix.OpenDatabase(t.Context(), filepath.Join(t.TempDir(), "admin.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	c, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, UserID: admin, Login: matrix.AccessToken(adminToken), DB: db})
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSynapseAdmin runs the Synapse adapter against a test server that follows Synapse's
// published admin API (docs/admin_api/user_admin_api.md): request paths and bodies, the
// administrator's bearer token, Matrix errors. No Synapse runs here (none in apt): the server
// is the API's description, not Synapse.
func TestSynapseAdmin(t *testing.T) {
	const server = "synapse.test"
	admin, leaver := id.UserID("@admin:"+server), id.UserID("@leaver:"+server)
	var mu sync.Mutex
	devices := map[id.UserID][]string{}
	for i := range 250 { // more than one delete_devices batch
		devices[leaver] = append(devices[leaver], fmt.Sprintf("DEV%03d", i))
	}
	var deleteCalls int
	var locked, deactivated bool
	var erase any
	known := func(w http.ResponseWriter, r *http.Request) bool {
		if id.UserID(r.PathValue("user")) != leaver {
			adminErrJSON(w, http.StatusNotFound, "M_NOT_FOUND", "User not found")
			return false
		}
		return true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_synapse/admin/v1/server_version", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, map[string]string{"server_version": "1.140.0"})
	})
	mux.HandleFunc("GET /_synapse/admin/v2/users/{user}/devices", func(w http.ResponseWriter, r *http.Request) {
		if !known(w, r) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		var list []map[string]any
		for _, d := range devices[leaver] {
			list = append(list, map[string]any{"device_id": d, "display_name": "phone", "user_id": leaver, "last_seen_ts": 1474491775024})
		}
		adminJSON(w, map[string]any{"devices": list, "total": len(list)})
	})
	mux.HandleFunc("POST /_synapse/admin/v2/users/{user}/delete_devices", func(w http.ResponseWriter, r *http.Request) {
		if !known(w, r) {
			return
		}
		var body struct {
			Devices []string `json:"devices"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Devices == nil {
			adminErrJSON(w, http.StatusBadRequest, "M_BAD_JSON", "devices required")
			return
		}
		mu.Lock()
		deleteCalls++
		devices[leaver] = slices.DeleteFunc(devices[leaver], func(d string) bool { return slices.Contains(body.Devices, d) })
		mu.Unlock()
		adminJSON(w, map[string]any{})
	})
	mux.HandleFunc("PUT /_synapse/admin/v2/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		if !known(w, r) {
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body) != 1 || body["locked"] != true {
			adminErrJSON(w, http.StatusBadRequest, "M_BAD_JSON", fmt.Sprintf("unexpected body %v", body))
			return
		}
		mu.Lock()
		locked = true
		mu.Unlock()
		adminJSON(w, map[string]any{"name": leaver, "locked": true})
	})
	mux.HandleFunc("POST /_synapse/admin/v1/deactivate/{user}", func(w http.ResponseWriter, r *http.Request) {
		if !known(w, r) {
			return
		}
		var body map[string]any
		must(t, json.NewDecoder(r.Body).Decode(&body))
		mu.Lock()
		deactivated, erase = true, body["erase"]
		mu.Unlock()
		adminJSON(w, map[string]any{"id_server_unbind_result": "success"})
	})
	srv := adminServer(t, admin, mux)
	ctx := t.Context()
	s := identity.NewSynapse(adminClient(t, srv, admin), nil)
	var _ identity.AccountAdmin = s

	if s.ServerName() != server {
		t.Fatalf("ServerName = %q", s.ServerName())
	}
	missing, err := s.Missing(ctx, []identity.ActionKind{identity.ActionLogout, identity.ActionEvacuate, identity.ActionLock})
	must(t, err)
	if len(missing) != 1 || missing[0].Action != identity.ActionEvacuate {
		t.Fatalf("Missing = %v, want only evacuate", missing)
	}

	must(t, s.Logout(ctx, leaver))
	if len(devices[leaver]) != 0 || deleteCalls != 3 {
		t.Fatalf("after Logout: %d devices left, %d delete_devices calls; want 0 and 3 (batches of 100)", len(devices[leaver]), deleteCalls)
	}
	must(t, s.Lock(ctx, leaver))
	must(t, s.Deactivate(ctx, leaver, true))
	if !locked || !deactivated || erase != true {
		t.Fatalf("locked %v, deactivated %v (erase %v)", locked, deactivated, erase)
	}

	// This server predates the suspend API: Synapse answers 404 M_UNRECOGNIZED.
	err = s.Suspend(ctx, leaver)
	var ce *identity.CapabilityError
	if !errors.As(err, &ce) || !errors.Is(err, identity.ErrAdminUnsupported) || ce.ErrCode != "M_UNRECOGNIZED" || ce.Action != identity.ActionSuspend {
		t.Fatalf("Suspend on a server without it = %v, want a CapabilityError (M_UNRECOGNIZED)", err)
	}
	if err := s.Evacuate(ctx, leaver); !errors.As(err, &ce) {
		t.Fatalf("Evacuate = %v, want a CapabilityError", err)
	}
	// An unknown user is the server's refusal, not a missing capability.
	var ae *identity.AdminError
	err = s.Lock(ctx, "@nobody:"+server)
	if !errors.As(err, &ae) || ae.ErrCode != "M_NOT_FOUND" || errors.As(err, &ce) {
		t.Fatalf("Lock of an unknown user = %v, want an AdminError M_NOT_FOUND", err)
	}
	// Another server's user is refused before any request.
	if err := s.Logout(ctx, "@someone:other.test"); !errors.Is(err, identity.ErrAdminUnsupported) {
		t.Fatalf("Logout of another server's user = %v", err)
	}
}

// TestSynapseAdminNotExposed: where /_synapse/admin is not served (a Synapse behind a proxy
// that keeps it internal, or not a Synapse), Missing names every action.
func TestSynapseAdminNotExposed(t *testing.T) {
	admin := id.UserID("@admin:hidden.test")
	srv := adminServer(t, admin, http.NewServeMux())
	s := identity.NewSynapse(adminClient(t, srv, admin), nil)
	missing, err := s.Missing(t.Context(), []identity.ActionKind{identity.ActionLogout, identity.ActionLock})
	must(t, err)
	if len(missing) != 2 || missing[0].Status != http.StatusNotFound || missing[0].ErrCode != "M_UNRECOGNIZED" {
		t.Fatalf("Missing = %v, want logout and lock, each 404 M_UNRECOGNIZED", missing)
	}
	var ce *identity.CapabilityError
	if err := s.Logout(t.Context(), "@leaver:hidden.test"); !errors.As(err, &ce) {
		t.Fatalf("Logout = %v, want a CapabilityError", err)
	}
}
