package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestAccountModeration runs the spec's account moderation adapter against a test server that
// follows the client-server API v1.18 (PUT /_matrix/client/v1/admin/lock/{userId} and
// .../suspend/{userId} with {"locked": true} / {"suspended": true}, the m.account_moderation
// capability, M_FORBIDDEN for a non-administrator). No server here implements v1.18 (Dendrite
// does not: see TestAccountModerationDendrite); the test server is the spec's description.
func TestAccountModeration(t *testing.T) {
	const server = "spec.test"
	admin, leaver := id.UserID("@admin:"+server), id.UserID("@leaver:"+server)
	var mu sync.Mutex
	state := map[string]bool{}
	caps := map[string]any{"lock": true, "suspend": true}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/v3/capabilities", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		adminJSON(w, map[string]any{"capabilities": map[string]any{"m.change_password": map[string]bool{"enabled": true}, "m.account_moderation": caps}})
	})
	for _, what := range []string{"lock", "suspend"} {
		field := map[string]string{"lock": "locked", "suspend": "suspended"}[what]
		mux.HandleFunc("PUT /_matrix/client/v1/admin/"+what+"/{user}", func(w http.ResponseWriter, r *http.Request) {
			if id.UserID(r.PathValue("user")) != leaver {
				adminErrJSON(w, http.StatusNotFound, "M_NOT_FOUND", "Unknown user")
				return
			}
			var body map[string]any
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body) != 1 || body[field] != true {
				adminErrJSON(w, http.StatusBadRequest, "M_BAD_JSON", "want {\""+field+"\": true}")
				return
			}
			mu.Lock()
			state[what+" "+string(leaver)] = true
			mu.Unlock()
			adminJSON(w, map[string]bool{field: true})
		})
	}
	srv := adminServer(t, admin, mux)
	ctx := t.Context()
	m := identity.NewAccountModeration(adminClient(t, srv, admin), nil)
	var _ identity.AccountAdmin = m

	missing, err := m.Missing(ctx, []identity.ActionKind{identity.ActionLogout, identity.ActionLock, identity.ActionSuspend, identity.ActionDeactivate})
	must(t, err)
	if len(missing) != 1 || missing[0].Action != identity.ActionDeactivate {
		t.Fatalf("Missing = %v, want only deactivate", missing)
	}
	must(t, m.Suspend(ctx, leaver))
	must(t, m.Logout(ctx, leaver)) // a lock: the spec has no logout of another user
	if !state["lock "+string(leaver)] || !state["suspend "+string(leaver)] {
		t.Fatalf("server state after Logout and Suspend: %v", state)
	}
	var ae *identity.AdminError
	if err := m.Lock(ctx, "@nobody:"+server); !errors.As(err, &ae) || ae.ErrCode != "M_NOT_FOUND" {
		t.Fatalf("Lock of an unknown user = %v, want M_NOT_FOUND", err)
	}

	// A server that does not advertise suspend: Missing says so, by its capability's name.
	mu.Lock()
	caps = map[string]any{"lock": true, "suspend": false}
	mu.Unlock()
	missing, err = m.Missing(ctx, []identity.ActionKind{identity.ActionLock, identity.ActionSuspend})
	must(t, err)
	if len(missing) != 1 || missing[0].Capability != "m.account_moderation.suspend" {
		t.Fatalf("Missing without suspend = %v", missing)
	}
}

// TestAccountModerationDendrite: Dendrite implements neither the v1.18 endpoints nor their
// capability. Missing says which capability is absent, the endpoint's M_UNRECOGNIZED is a
// typed *CapabilityError, and a Reconciler's plan shows it and leaves the lock out.
func TestAccountModerationDendrite(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	srv.RegisterAdmin(t, "svc")
	svc := srv.NewClient(t, "svc")
	leaver := srv.NewClient(t, "leaver")
	m := identity.NewAccountModeration(svc, nil)

	missing, err := m.Missing(ctx, []identity.ActionKind{identity.ActionLock})
	must(t, err)
	if len(missing) != 1 || missing[0].Capability != "m.account_moderation.lock" {
		t.Fatalf("Missing on Dendrite = %v, want m.account_moderation.lock", missing)
	}
	var ce *identity.CapabilityError
	err = m.Lock(ctx, leaver.UserID())
	if !errors.As(err, &ce) || !errors.Is(err, identity.ErrAdminUnsupported) || ce.Status == 0 {
		t.Fatalf("Lock on Dendrite = %v, want a CapabilityError with the server's answer", err)
	}
	t.Logf("Dendrite's answer to the lock endpoint: %v", err)

	// The plan: the leaver is kicked from the managed room; lock is named missing.
	room, err := svc.CreateRoom(ctx, matrix.RoomSpec{Invite: []id.UserID{leaver.UserID()}})
	must(t, err)
	matrixtest.Eventually(t, func() error {
		_, err := srv.Client(t, "leaver").JoinRoomByID(ctx, room)
		return err
	})
	audit, err := identity.OpenAuditLog(ctx, svc.Database())
	must(t, err)
	src := fixedRoster{People: []identity.Person{{UserID: leaver.UserID(), Reason: "left"}}}
	rec := identity.NewReconciler(svc, src, identity.Scope{Rooms: []id.RoomID{room}}, audit,
		identity.ReconcileOptions{Admin: identity.NewDendrite(svc), Lock: true, MaxRemovePercent: 100})
	plan, err := rec.Plan(ctx)
	must(t, err)
	var kinds []identity.ActionKind
	for _, a := range plan.Actions {
		kinds = append(kinds, a.Kind)
	}
	if strings.Join(actionNames(kinds), ",") != "kick,logout" || len(plan.Missing) != 1 || plan.Missing[0].Action != identity.ActionLock {
		t.Fatalf("plan actions %v, missing %v; want kick,logout and lock missing", kinds, plan.Missing)
	}
	var table strings.Builder
	must(t, plan.WriteTable(&table))
	if !strings.Contains(table.String(), "MISSING") || !strings.Contains(table.String(), "lock") {
		t.Fatalf("the plan's table does not show the missing lock:\n%s", table.String())
	}
	rec = identity.NewReconciler(svc, src, identity.Scope{Rooms: []id.RoomID{room}}, audit,
		identity.ReconcileOptions{Admin: m, MaxRemovePercent: 100})
	plan, err = rec.Plan(ctx)
	must(t, err)
	if len(plan.Missing) != 1 || plan.Missing[0].Capability != "m.account_moderation.lock" || plan.Missing[0].Action != identity.ActionLogout {
		t.Fatalf("plan with the spec adapter on Dendrite: missing %v, want logout (m.account_moderation.lock)", plan.Missing)
	}

	// An adapter that does not ask first (the test hides Missing): the endpoint's answer at
	// apply time is the typed error, and the audit log keeps its status and errcode; the kick
	// is done all the same.
	rec = identity.NewReconciler(svc, src, identity.Scope{Rooms: []id.RoomID{room}}, audit,
		identity.ReconcileOptions{Admin: noProbe{m}, MaxRemovePercent: 100})
	plan, err = rec.Plan(ctx)
	must(t, err)
	err = rec.Apply(ctx, plan)
	if !errors.As(err, &ce) || !errors.Is(err, identity.ErrAdminUnsupported) {
		t.Fatalf("Apply of a logout Dendrite cannot do = %v, want a CapabilityError", err)
	}
	entries, err := audit.List(ctx, identity.AuditFilter{RunID: plan.RunID})
	must(t, err)
	var outcomes []string
	for _, e := range entries {
		outcomes = append(outcomes, fmt.Sprintf("%s %s %d %s", e.Action, e.Outcome, e.Status, e.ErrCode))
	}
	if want := []string{"kick ok 0 ", "logout failed 404 M_UNRECOGNIZED"}; !slices.Equal(outcomes, want) {
		t.Fatalf("audit = %q, want %q", outcomes, want)
	}
}

// noProbe is an AccountAdmin without Missing: what a third-party adapter may be.
type noProbe struct{ identity.AccountAdmin }

func actionNames(kinds []identity.ActionKind) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return out
}

// fixedRoster is a Source that always says the same.
type fixedRoster identity.Roster

func (f fixedRoster) Name() string { return "fixed" }

func (f fixedRoster) Roster(context.Context) (identity.Roster, error) { return identity.Roster(f), nil }
