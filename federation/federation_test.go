package federation_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestMembersOnly is the story on three federated Dendrites A, B and C with host names
// of their own. The signed list names A and B: a case room created on A carries the ACL, B's
// user joins, C's user cannot. The list is re-signed with C: the reconciler (dry run first)
// updates the room's ACL, C's user joins and talks. Re-signed without C: the ACL shuts C out
// again and what C's server sends into the room is refused by A (Dendrite 0.13.8 checks the
// ACL against the origin of each transaction's events, internal/transactionrequest.go).
func TestMembersOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three federated homeservers")
	}
	fed := matrixtest.NewFederation(t, 3, matrixtest.DistinctHosts())
	a, b, c := fed[0], fed[1], fed[2]
	ctx := context.Background()
	key := newKey(t)
	ls := newListServer(t, sign(t, doc(1, a.ServerName, b.ServerName), key))

	var rec *federation.Reconciler
	var logs logtest.Buffer
	w, err := federation.NewWatcher(ls.URL, key.Public(), federation.Options{
		Logger: logs.Logger(),
		OnChange: func(ctx context.Context, _, l *federation.List) {
			if rec != nil {
				if err := rec.Reconcile(ctx, l); err != nil {
					t.Errorf("Reconcile(version %d): %v", l.Version(), err)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	clerk := a.NewClient(t, "clerk", matrixtest.WithCaseRoomACL(w))
	if rec, err = federation.NewReconciler(ctx, clerk, federation.ReconcilerOptions{Logger: logs.Logger()}); err != nil {
		t.Fatal(err)
	}
	bob := b.Client(t, "bob")
	carol := c.Client(t, "carol")
	observer := a.Client(t, "observer") // A's independent view of the room

	// Invites from members only.
	policy := &matrix.AutoJoinPolicy{AllowServer: w.HasServer}
	if !policy.Allows(bob.UserID) || policy.Allows(carol.UserID) {
		t.Errorf("AutoJoinPolicy with the list: bob %v, carol %v", policy.Allows(bob.UserID), policy.Allows(carol.UserID))
	}

	noE2EE := false
	room, err := clerk.CreateRoom(ctx, matrix.RoomSpec{
		Preset: matrix.CaseRoom, CaseID: "4711", Encrypted: &noE2EE,
		Invite: []id.UserID{bob.UserID, carol.UserID, observer.UserID},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A room without ACL where C's user sits too: the barrier below.
	open, err := clerk.CreateRoom(ctx, matrix.RoomSpec{Encrypted: &noE2EE, Invite: []id.UserID{carol.UserID, observer.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	join(t, observer, room)
	join(t, observer, open)

	var acl map[string]any
	if err := observer.StateEvent(ctx, room, event.StateServerACL, "", &acl); err != nil {
		t.Fatalf("the case room has no ACL: %v", err)
	}
	if got := fmt.Sprint(acl["allow"]); got != "[a.localhost b.localhost]" || acl["allow_ip_literals"] != false {
		t.Fatalf("ACL %v", acl)
	}

	join(t, bob, room)
	join(t, carol, open)
	waitInvite(t, carol, room)
	_, err = carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
	if err == nil {
		t.Fatal("C's user joined a room whose ACL does not allow C")
	}
	t.Logf("C's join refused as it should be: %v", err)

	// The list with C: a dry run plans one change and changes nothing.
	v2 := sign(t, doc(2, a.ServerName, b.ServerName, c.ServerName), key)
	l2, err := federation.Parse(v2, key.Public(), timeNow(), 0)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := rec.Plan(ctx, l2)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Room != room || !slices.Equal(plan.Changes[0].Added(), []string{"c.localhost"}) {
		t.Fatalf("plan %+v", plan)
	}
	if got, _ := clerk.ServerACL(ctx, room); slices.Contains(got.Allow, "c.localhost") {
		t.Fatal("the dry run changed the room")
	}
	ls.publish(v2)
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := clerk.ServerACL(ctx, room); err != nil || !slices.Contains(got.Allow, "c.localhost") {
		t.Fatalf("after the reconciler: %+v, %v", got, err)
	}
	matrixtest.Eventually(t, func() error {
		_, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
		return err
	})
	if _, err := carol.SendText(ctx, room, "hello from C"); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, observer, room, "hello from C")

	// The list without C: the ACL shuts C out again, and A refuses what C's server sends.
	ls.publish(sign(t, doc(3, a.ServerName, b.ServerName), key))
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := clerk.ServerACL(ctx, room); slices.Contains(got.Allow, "c.localhost") {
		t.Fatalf("C still allowed: %v", got.Allow)
	}
	if _, err := carol.SendText(ctx, room, "after removal"); err != nil {
		t.Fatal(err)
	}
	// C's server sends to A in order: once A has C's next event in the open room, it has
	// handled the one before it.
	if _, err := carol.SendText(ctx, open, "barrier"); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, observer, open, "barrier")
	msgs, err := observer.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range msgs.Chunk {
		if e.Sender == carol.UserID && e.Type == event.EventMessage {
			if body, _ := e.Content.Raw["body"].(string); body == "after removal" {
				t.Fatal("A accepted an event from C after the ACL shut C out")
			}
		}
	}

	// The audit table has the dry run and both changes.
	entries, err := rec.Audit(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, fmt.Sprintf("v%d %s dry=%v", e.ListVersion, e.Outcome, e.DryRun))
		if e.Actor != clerk.UserID() {
			t.Errorf("audit actor %s", e.Actor)
		}
	}
	want := "v2 planned dry=true v2 planned dry=true v2 done dry=false v3 planned dry=true v3 done dry=false"
	if strings.Join(got, " ") != want {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(got, " "), want)
	}
	if !strings.Contains(logs.String(), "federation: ACL updated") {
		t.Errorf("no audit log line:\n%s", logs.String())
	}
}

func join(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	matrixtest.Eventually(t, func() error { _, err := cli.JoinRoomByID(context.Background(), room); return err })
}

// waitInvite waits until cli's server has the invite to room.
func waitInvite(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		resp, err := cli.SyncRequest(context.Background(), 0, "", "", false, event.PresenceOffline)
		if err != nil {
			return err
		}
		if _, ok := resp.Rooms.Invite[room]; !ok {
			return errors.New("no invite yet")
		}
		return nil
	})
}
