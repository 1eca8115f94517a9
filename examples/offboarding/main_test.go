package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestOffboarding: the first reconcile removes the person the roster marks inactive (a static
// roster stands in for the LDAP directory here; identity's own tests run the LDAP source
// against slapd), and a SCIM PATCH active=false removes another at once.
func TestOffboarding(t *testing.T) {
	srv := matrixtest.NewServer(t)
	svc, pw := srv.RegisterUser(t, "svc")
	svcCli := srv.Client(t, "svc")
	anna, bo, cia := srv.Client(t, "anna"), srv.Client(t, "bo"), srv.Client(t, "cia")
	var invite []id.UserID
	for _, c := range []*mautrix.Client{anna, bo, cia} {
		invite = append(invite, c.UserID)
	}
	// Ten members, so that one leaver is within the 10% limit.
	for i := range 7 {
		c := srv.Client(t, fmt.Sprintf("colleague%d", i))
		invite = append(invite, c.UserID)
	}
	created, err := svcCli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: invite})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	for _, u := range invite {
		if _, err := srv.Client(t, u.Localpart()).JoinRoomByID(t.Context(), room); err != nil {
			t.Fatal(err)
		}
	}
	roster := filepath.Join(t.TempDir(), "roster.yaml")
	if err := os.WriteFile(roster, []byte(fmt.Sprintf("people:\n  - {user_id: %q, active: false, reason: left}\n", anna.UserID)), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	plans := make(chan *identity.Plan, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{Homeserver: srv.URL, User: "svc", Password: pw, DB: filepath.Join(t.TempDir(), "svc.db"),
			Scope: identity.Scope{Rooms: []id.RoomID{room}}, Source: identity.StaticSource{Path: roster},
			SCIM: l, SCIMToken: "scim-token", Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
			func(p *identity.Plan, err error) {
				if err != nil {
					t.Errorf("reconcile: %v", err)
				}
				plans <- p
			})
	}()
	if p := <-plans; len(p.Leavers) != 1 || p.Leavers[0] != anna.UserID {
		t.Fatalf("the first reconcile removed %v, want %s", p.Leavers, anna.UserID)
	}
	if m := membership(t, bo, room, anna.UserID); m != event.MembershipLeave {
		t.Fatalf("anna after the reconcile: %s", m)
	}

	base := "http://" + l.Addr().String()
	resp := scim(t, base, http.MethodPost, "/Users", `{"userName":"bo","active":true}`)
	id := strings.Split(strings.Split(resp, `"id":"`)[1], `"`)[0]
	scim(t, base, http.MethodPatch, "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`)
	if m := membership(t, cia, room, bo.UserID); m != event.MembershipLeave {
		t.Fatalf("bo after the SCIM PATCH: %s", m)
	}
	if m := membership(t, cia, room, svc); m != event.MembershipJoin {
		t.Fatalf("the service account: %s", m)
	}
	cancel()
	<-done
}

func membership(t *testing.T, viewer *mautrix.Client, room id.RoomID, user id.UserID) event.Membership {
	t.Helper()
	var m event.MemberEventContent
	if err := viewer.StateEvent(t.Context(), room, event.StateMember, string(user), &m); err != nil {
		t.Fatal(err)
	}
	return m.Membership
}

func scim(t *testing.T, base, method, path, body string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer scim-token")
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return string(data)
}
