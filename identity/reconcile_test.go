package identity_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// agencies is the setting of the offboarding tests: agency A runs server a (its people in
// slapd), agency B server b; five colleagues sit in three managed rooms, two on a and one on b,
// and the leaver-to-be also in a room nobody manages.
type agencies struct {
	a, b      *matrixtest.Server
	ldap      *slapdServer
	svc       *matrix.Client // A's service account, an administrator of a
	svcGot    *matrixtest.Recorder
	people    map[string]*mautrix.Client // raw clients: a1, a2, a3 on a; b1, b2 on b
	a1, a2    *matrix.Client             // a1 and a2 also run encrypted samtal clients
	a2Machine *e2ee.Machine
	a1Got     *matrixtest.Recorder
	managed   []id.RoomID // r1, r2 on a (by svc), r3 on b (by b1)
	unmanaged id.RoomID
	audit     *identity.AuditLog
}

func newAgencies(t *testing.T) *agencies {
	t.Helper()
	ctx := t.Context()
	fed := matrixtest.NewFederation(t, 2)
	ag := &agencies{a: fed[0], b: fed[1], ldap: startSlapd(t), people: map[string]*mautrix.Client{}}
	ag.a.RegisterAdmin(t, "svc")
	ag.svc = ag.a.NewClient(t, "svc", matrixtest.Encrypted())
	ag.svcGot = matrixtest.NewRecorder(t, ag.svc, "")
	ag.a1 = ag.a.NewClient(t, "a1", matrixtest.Encrypted())
	ag.a2 = ag.a.NewClient(t, "a2", matrixtest.OnEncrypted(func(m *e2ee.Machine) error { ag.a2Machine = m; return nil }))
	ag.a1Got = matrixtest.NewRecorder(t, ag.a1, "")
	matrixtest.NewRecorder(t, ag.a2, "")
	for _, p := range []string{"a1", "a2", "a3"} {
		ag.people[p] = ag.a.Client(t, p)
		ag.ldap.addPerson(t, p)
	}
	for _, p := range []string{"b1", "b2"} {
		ag.people[p] = ag.b.Client(t, p)
	}
	everyone := []id.UserID{ag.a.UserID("a1"), ag.a.UserID("a2"), ag.a.UserID("a3"), ag.b.UserID("b1"), ag.b.UserID("b2")}

	// r1: encrypted, a2 is a moderator there. r2: another room of A's. r3: B's room, where
	// A's service account was made an administrator.
	r1, err := ag.svc.CreateRoom(ctx, matrix.RoomSpec{Name: "r1", Invite: everyone,
		PowerLevels: map[id.UserID]matrix.PowerLevel{ag.a.UserID("a2"): matrix.PowerModerator}})
	must(t, err)
	r2, err := ag.svc.CreateRoom(ctx, matrix.RoomSpec{Name: "r2", Encrypted: new(bool), Invite: everyone})
	must(t, err)
	b1 := ag.people["b1"]
	created, err := b1.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "r3", Preset: "private_chat",
		Invite:             slices.DeleteFunc(append([]id.UserID{ag.svc.UserID()}, everyone...), func(u id.UserID) bool { return u == b1.UserID }),
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{b1.UserID: 100, ag.svc.UserID(): 100}}})
	must(t, err)
	r3 := created.RoomID
	// A room nobody manages, which the leaver is in too.
	other, err := ag.people["a3"].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{ag.a.UserID("a2")}})
	must(t, err)
	ag.managed, ag.unmanaged = []id.RoomID{r1, r2, r3}, other.RoomID

	for _, room := range ag.managed {
		for name, cli := range ag.people {
			if name == "b1" && room == r3 {
				continue
			}
			joinWhenInvited(t, cli, room)
		}
		if room == r3 {
			joinWhenInvited(t, ag.svc.Mautrix(), room)
		}
	}
	joinWhenInvited(t, ag.people["a2"], ag.unmanaged)
	ag.audit, err = identity.OpenAuditLog(ctx, ag.svc.Database())
	must(t, err)
	return ag
}

func joinWhenInvited(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		// The samtal clients' Syncers accept invites from their own server by themselves.
		if membership(t, cli, room, cli.UserID) == event.MembershipJoin {
			return nil
		}
		_, err := cli.JoinRoomByID(t.Context(), room)
		if err != nil && strings.Contains(err.Error(), "already joined") {
			return nil // the Syncer was quicker
		}
		return err
	})
}

func (ag *agencies) reconciler(src identity.Source, opts identity.ReconcileOptions) *identity.Reconciler {
	if opts.MaxRemovePercent == 0 {
		opts.MaxRemovePercent = 20 // one of seven members is 14%
	}
	opts.Admin = identity.NewDendrite(ag.svc)
	return identity.NewReconciler(ag.svc, src, identity.Scope{Rooms: ag.managed}, ag.audit, opts)
}

// membership is user's membership in room as the server of the room's creator... or any
// member's server sees it (read through viewer).
func membership(t *testing.T, viewer *mautrix.Client, room id.RoomID, user id.UserID) event.Membership {
	t.Helper()
	var m event.MemberEventContent
	if err := viewer.StateEvent(t.Context(), room, event.StateMember, string(user), &m); err != nil {
		return ""
	}
	return m.Membership
}

// TestOffboardingLDAP is the "done when": a2 is disabled in slapd; the plan names
// exactly a2; apply lowers a2's power in r1, removes a2 from r1, r2 (on a) and r3 (on b) and
// from nothing else, ends a2's sessions on a; the audit log has each action; a second run does
// nothing; a2's own client, holding its old keys, cannot read what follows in r1.
func TestOffboardingLDAP(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts two federating homeservers and slapd")
	}
	ag := newAgencies(t)
	ctx := t.Context()
	a2 := ag.a.UserID("a2")
	r1 := ag.managed[0]

	// Before: a1 and a2 read an encrypted message in r1.
	send(t, ag.svc, r1, "before the offboarding")
	ag.a1Got.WaitText(t, "before the offboarding")

	ag.ldap.disable(t, "a2")
	rec := ag.reconciler(ag.ldap.source(ag.a.ServerName), identity.ReconcileOptions{})
	plan, err := rec.Plan(ctx)
	must(t, err)
	if !slices.Equal(plan.Leavers, []id.UserID{a2}) {
		t.Fatalf("plan leavers = %v, want exactly %s", plan.Leavers, a2)
	}
	var kinds []string
	for _, a := range plan.Actions {
		kinds = append(kinds, fmt.Sprintf("%s %s", a.Kind, a.Room))
	}
	want := []string{"demote " + string(r1), "kick " + string(r1), "kick " + string(ag.managed[1]), "kick " + string(ag.managed[2]), "logout "}
	if !slices.Equal(kinds, want) {
		t.Fatalf("plan actions = %q, want %q", kinds, want)
	}
	var table bytes.Buffer
	must(t, plan.WriteTable(&table))
	if !strings.Contains(table.String(), string(a2)) {
		t.Errorf("the plan's table does not name %s:\n%s", a2, table.String())
	}

	must(t, rec.Apply(ctx, plan))

	// a2 is out of every managed room, as each room's other server sees it too.
	for _, room := range ag.managed {
		for _, viewer := range []*mautrix.Client{ag.people["a1"], ag.people["b2"]} {
			waitMembership(t, viewer, room, a2, event.MembershipLeave)
		}
	}
	// ... and in nothing else: the unmanaged room, and everyone else where they were.
	if m := membership(t, ag.people["a3"], ag.unmanaged, a2); m != event.MembershipJoin {
		t.Errorf("a2 in the unmanaged room: %s, want join", m)
	}
	for _, room := range ag.managed {
		for name, cli := range ag.people {
			if name == "a2" {
				continue
			}
			if m := membership(t, ag.people["b2"], room, cli.UserID); m != event.MembershipJoin {
				t.Errorf("%s in %s: %s, want join", name, room, m)
			}
		}
	}
	// a2's sessions on their own server are over.
	if _, err := ag.people["a2"].Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("a2's device after the offboarding: whoami = %v, want M_UNKNOWN_TOKEN", err)
	}
	// The audit log has each action, done.
	entries, err := ag.audit.List(ctx, identity.AuditFilter{RunID: plan.RunID})
	must(t, err)
	if len(entries) != len(plan.Actions) {
		t.Fatalf("audit log has %d entries for the run, want %d", len(entries), len(plan.Actions))
	}
	for i, e := range entries {
		if e.Outcome != "ok" || e.Target != a2 || e.Action != string(plan.Actions[i].Kind) || e.Actor != ag.svc.UserID() || e.Reason == "" {
			t.Errorf("audit entry %d = %+v", i, e)
		}
	}
	// Encryption: the next message in r1 uses a key a2's client never got.
	m2 := sendID(t, ag.svc, r1, "after the offboarding")
	ag.a1Got.WaitText(t, "after the offboarding")
	assertCannotDecrypt(t, ag.a2Machine, ag.svc, r1, m2)

	// A second run does nothing.
	again, err := rec.Plan(ctx)
	must(t, err)
	if !again.Empty() {
		t.Fatalf("second plan = %+v, want nothing to do", again.Actions)
	}

	t.Run("over the safety limit", func(t *testing.T) {
		ag.ldap.disable(t, "a1")
		ag.ldap.disable(t, "a3")
		strict := ag.reconciler(ag.ldap.source(ag.a.ServerName), identity.ReconcileOptions{MaxRemovePercent: 20})
		plan, err := strict.Plan(ctx)
		if !errors.Is(err, identity.ErrSafetyLimit) || plan == nil || !plan.OverLimit {
			t.Fatalf("Plan = %v, want ErrSafetyLimit with the plan", err)
		}
		if err := strict.Apply(ctx, plan); !errors.Is(err, identity.ErrSafetyLimit) {
			t.Fatalf("Apply = %v, want ErrSafetyLimit", err)
		}
		for _, u := range []string{"a1", "a3"} {
			if m := membership(t, ag.people["b2"], r1, ag.a.UserID(u)); m != event.MembershipJoin {
				t.Errorf("%s after a refused plan: %s, want join", u, m)
			}
		}
	})

	t.Run("LDAP down", func(t *testing.T) {
		ag.ldap.stop()
		_, err := rec.Run(ctx)
		if !errors.Is(err, identity.ErrSourceUnavailable) {
			t.Fatalf("Run with slapd stopped = %v, want ErrSourceUnavailable", err)
		}
		if m := membership(t, ag.people["b2"], r1, ag.a.UserID("a1")); m != event.MembershipJoin {
			t.Errorf("a1 after a run against a stopped LDAP: %s, want join", m)
		}
	})

	t.Run("SCIM PATCH active=false", func(t *testing.T) {
		// B's colleague b2 is deprovisioned through A's SCIM endpoint (A manages who of B's
		// people sit in its rooms, for example consultants): removed at once from all three.
		rec := ag.reconciler(ag.ldap.source(ag.a.ServerName), identity.ReconcileOptions{})
		scim, err := identity.NewSCIM(identity.SCIMOptions{Token: "scim-secret", ServerName: ag.b.ServerName,
			OnDeprovision: func(ctx context.Context, u id.UserID, reason string) error {
				_, err := rec.Offboard(ctx, u, reason)
				return err
			}})
		must(t, err)
		srv := httptest.NewServer(scim)
		defer srv.Close()
		created := scimDo(t, srv.URL, "scim-secret", http.MethodPost, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"b2","active":true}`, http.StatusCreated)
		rid := created["id"].(string)
		scimDo(t, srv.URL, "scim-secret", http.MethodPatch, "/Users/"+rid,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`, http.StatusOK)
		for _, room := range ag.managed {
			waitMembership(t, ag.people["b1"], room, ag.b.UserID("b2"), event.MembershipLeave)
		}
		if m := membership(t, ag.people["b2"], ag.managed[0], ag.a.UserID("a1")); m != event.MembershipJoin {
			t.Errorf("a1 after b2's deprovisioning: %s", m)
		}
	})
}

func waitMembership(t *testing.T, viewer *mautrix.Client, room id.RoomID, user id.UserID, want event.Membership) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		if m := membership(t, viewer, room, user); m != want {
			return fmt.Errorf("%s in %s seen by %s: %q, want %q", user, room, viewer.UserID, m, want)
		}
		return nil
	})
}

func sendID(t *testing.T, c *matrix.Client, room id.RoomID, text string) id.EventID {
	t.Helper()
	p, err := c.Send(t.Context(), room, matrix.Text(text), matrix.SendOptions{})
	must(t, err)
	evt, err := p.Wait(t.Context())
	must(t, err)
	return evt
}

// assertCannotDecrypt checks on the crypto, as e2ee's removal tests do: m holds no room key for
// evt's session, and refuses evt for want of keys.
func assertCannotDecrypt(t *testing.T, m *e2ee.Machine, holder *matrix.Client, room id.RoomID, evt id.EventID) {
	t.Helper()
	raw, err := holder.Mautrix().GetEvent(t.Context(), room, evt)
	must(t, err)
	raw.RoomID = room
	must(t, raw.Content.ParseRaw(raw.Type))
	sess := raw.Content.AsEncrypted().SessionID
	if igs, _ := m.OlmMachine().CryptoStore.GetGroupSession(t.Context(), room, sess); igs != nil {
		t.Errorf("the removed member holds the room key %s of %s", sess, evt)
	}
	if _, err := m.Decrypt(t.Context(), raw); !errors.Is(err, matrix.ErrKeysMissing) {
		t.Errorf("the removed member decrypting %s: %v, want ErrKeysMissing", evt, err)
	}
}
