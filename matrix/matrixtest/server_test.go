package matrixtest_test

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSendAndReceive is the example in the package documentation: two users, a room, a
// message sent by one and received through sync by the other.
func TestSendAndReceive(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := srv.Client(t, "alice")
	bob := srv.Client(t, "bob")
	ctx := t.Context()

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "hello from alice")
	if err != nil {
		t.Fatalf("send: %v", err)
	}

	got := matrixtest.WaitMessage(t, bob, room.RoomID, "hello from alice")
	if got.ID != sent.EventID || got.Sender != alice.UserID {
		t.Errorf("bob received %s from %s, want %s from %s", got.ID, got.Sender, sent.EventID, alice.UserID)
	}
}

func TestRestartKeepsData(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := srv.Client(t, "alice")
	ctx := t.Context()
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "before the restart"); err != nil {
		t.Fatal(err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if srv.Running() {
		t.Fatal("server still running after Stop")
	}
	if _, err := alice.Whoami(ctx); err == nil {
		t.Fatal("a stopped server answered")
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}

	// The old access token, the room and its history survived; so did the password.
	if _, err := alice.Whoami(ctx); err != nil {
		t.Fatalf("old token after restart: %v", err)
	}
	matrixtest.WaitMessage(t, alice, room.RoomID, "before the restart")
	again := srv.Client(t, "alice")
	if again.UserID != alice.UserID || again.DeviceID == alice.DeviceID {
		t.Errorf("password login after restart gave %s/%s", again.UserID, again.DeviceID)
	}
}

func TestFederation(t *testing.T) {
	servers := matrixtest.NewFederation(t, 2)
	a, b := servers[0], servers[1]
	if a.ServerName == b.ServerName {
		t.Fatalf("both servers are named %s", a.ServerName)
	}
	alice := a.Client(t, "alice")
	bob := b.Client(t, "bob")
	ctx := t.Context()

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	// The invite travels over federation; joining does too.
	joinEventually(t, bob, room.RoomID)
	if _, err := alice.SendText(ctx, room.RoomID, "hello across agencies"); err != nil {
		t.Fatal(err)
	}
	got := matrixtest.WaitMessage(t, bob, room.RoomID, "hello across agencies")
	if got.Sender != alice.UserID {
		t.Errorf("sender %s, want %s", got.Sender, alice.UserID)
	}
	if _, err := bob.SendText(ctx, room.RoomID, "and back"); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, alice, room.RoomID, "and back")
}

// joinEventually joins a room over federation, retrying while the invite is still in flight.
func joinEventually(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cli.JoinRoomByID(t.Context(), room)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s could not join %s: %v", cli.UserID, room, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRateLimit(t *testing.T) {
	srv := matrixtest.NewServer(t, matrixtest.WithRateLimit(3, 2*time.Second))
	alice := srv.Client(t, "alice")
	ctx := t.Context()
	// Dendrite 0.13.8 limits most client endpoints (whoami, createRoom, join, invite...) but
	// not /send.
	var limited bool
	for i := 0; i < 20 && !limited; i++ {
		_, err := alice.Whoami(ctx)
		limited = errors.Is(err, mautrix.MLimitExceeded)
		if err != nil && !limited {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if !limited {
		t.Fatal("20 requests in a burst were never rate limited")
	}
}

func TestAppServiceLogin(t *testing.T) {
	reg := appservice.CreateRegistration()
	reg.ID = "gateway"
	reg.URL = "http://127.0.0.1:9" // never called in this test
	reg.SenderLocalpart = "gateway-bot"
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@mail_.*`), true)
	srv := matrixtest.NewServer(t, matrixtest.WithAppService(reg))

	cli, err := mautrix.NewClient(srv.URL, "", reg.AppToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	_, _, err = cli.Register(ctx, &mautrix.ReqRegister[any]{Username: "mail_anna", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
	if err != nil {
		t.Fatalf("register namespaced user: %v", err)
	}
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypeAppservice,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "mail_anna"},
	})
	if err != nil {
		t.Fatalf("m.login.application_service: %v", err)
	}
	if resp.UserID != srv.UserID("mail_anna") {
		t.Errorf("logged in as %s", resp.UserID)
	}
}

// TestForgottenServerIsStopped shows that a test which never stops its server leaves no
// homeserver behind: the cleanup stops it and its port goes dead.
func TestForgottenServerIsStopped(t *testing.T) {
	var srv *matrixtest.Server
	t.Run("forgets to stop", func(t *testing.T) {
		srv = matrixtest.NewServer(t)
	})
	if srv.Running() {
		t.Fatal("server still running after its test ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/_matrix/client/versions", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("%s still answers after its test ended", srv.URL)
	}
}

func TestWaitEventMatchesState(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := srv.Client(t, "alice")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Name: "named room"})
	if err != nil {
		t.Fatal(err)
	}
	evt := matrixtest.WaitEvent(t, alice, room.RoomID, func(e *event.Event) bool { return e.Type == event.StateRoomName })
	if evt.Content.AsRoomName().Name != "named room" {
		t.Errorf("room name %q", evt.Content.AsRoomName().Name)
	}
}
