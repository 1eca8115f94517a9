package identity_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestReconcileScope: a space's children are managed, and with WherePowerful the rooms where
// the service account may kick; a room where it is a plain member is not.
func TestReconcileScope(t *testing.T) {
	srv := matrixtest.NewServer(t)
	ctx := t.Context()
	svc := srv.NewClient(t, "svc")
	bo := srv.Client(t, "bo")
	var others []id.UserID
	for i := range 9 {
		others = append(others, srv.Client(t, fmt.Sprintf("p%d", i)).UserID)
	}
	members := append([]id.UserID{bo.UserID}, others...)
	space, err := svc.CreateSpace(ctx, matrix.RoomSpec{Name: "Agency"})
	must(t, err)
	child, err := svc.CreateRoom(ctx, matrix.RoomSpec{Name: "child", Encrypted: new(bool), Space: space, Invite: members})
	must(t, err)
	loose, err := svc.CreateRoom(ctx, matrix.RoomSpec{Name: "not in the space", Encrypted: new(bool), Invite: members})
	must(t, err)
	// Bo's own room, where svc is a plain member.
	created, err := bo.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{svc.UserID()}})
	must(t, err)
	bosRoom := created.RoomID
	matrixtest.Eventually(t, func() error { _, err := svc.Join(ctx, string(bosRoom)); return err })
	for _, u := range members {
		cli := srv.Client(t, u.Localpart())
		for _, r := range []id.RoomID{child, loose} {
			_, err := cli.JoinRoomByID(ctx, r)
			must(t, err)
		}
	}
	roster := filepath.Join(t.TempDir(), "roster.yaml")
	must(t, os.WriteFile(roster, []byte(fmt.Sprintf("people:\n  - {user_id: %q, active: false}\n", bo.UserID)), 0o600))
	audit, err := identity.OpenAuditLog(ctx, svc.Database())
	must(t, err)
	rooms := func(scope identity.Scope) []id.RoomID {
		t.Helper()
		p, err := identity.NewReconciler(svc, identity.StaticSource{Path: roster}, scope, audit, identity.ReconcileOptions{}).Plan(ctx)
		must(t, err)
		var out []id.RoomID
		for _, a := range p.Actions {
			out = append(out, a.Room)
		}
		slices.Sort(out)
		return out
	}
	if got := rooms(identity.Scope{Spaces: []id.RoomID{space}}); !slices.Equal(got, []id.RoomID{child}) {
		t.Errorf("space scope kicks from %v, want only %s", got, child)
	}
	want := []id.RoomID{child, loose}
	slices.Sort(want)
	if got := rooms(identity.Scope{WherePowerful: true}); !slices.Equal(got, want) {
		t.Errorf("where-powerful scope kicks from %v, want %v (not bo's own room %s)", got, want, bosRoom)
	}
	if _, err := identity.NewReconciler(svc, identity.StaticSource{Path: roster}, identity.Scope{}, audit, identity.ReconcileOptions{}).Plan(ctx); err == nil {
		t.Error("an empty scope planned")
	}
}
