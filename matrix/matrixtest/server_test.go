package matrixtest_test

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSendAndReceive: two raw mautrix users, a room, a
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

// federatedRoom has alice on a create a room and invite bob on b, who joins: the invite and
// the join travel over federation.
func federatedRoom(t *testing.T, a, b *matrixtest.Server) (alice, bob *mautrix.Client, room *mautrix.RespCreateRoom) {
	t.Helper()
	alice = a.Client(t, "alice")
	bob = b.Client(t, "bob")
	room, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	matrixtest.Eventually(t, func() error { _, err := bob.JoinRoomByID(t.Context(), room.RoomID); return err })
	return alice, bob, room
}

func TestFederation(t *testing.T) {
	servers := matrixtest.NewFederation(t, 2)
	a, b := servers[0], servers[1]
	if a.ServerName == b.ServerName {
		t.Fatalf("both servers are named %s", a.ServerName)
	}
	alice, bob, room := federatedRoom(t, a, b)
	ctx := t.Context()
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

// TestEncryptedClientsAgainstRawParty: what two encrypted samtal clients exchange is
// ciphertext to a raw mautrix member of the same room, and plaintext to the recorder.
func TestEncryptedClientsAgainstRawParty(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "casebot", matrixtest.Encrypted())
	officer := srv.NewClient(t, "officer", matrixtest.Encrypted())
	eve := srv.Client(t, "eve")
	room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Invite: []id.UserID{officer.UserID(), eve.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, join := range []func() error{
		func() error { _, err := officer.Join(t.Context(), string(room)); return err },
		func() error { _, err := eve.JoinRoomByID(t.Context(), room); return err },
	} {
		matrixtest.Eventually(t, join)
	}
	inbox := matrixtest.NewRecorder(t, officer, room)
	p, err := bot.Send(t.Context(), room, matrix.Text("secret decision"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := p.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := inbox.WaitText(t, "secret decision")
	if got.ID != sent || !got.Mautrix.WasEncrypted || got.Sender != bot.UserID() {
		t.Errorf("officer read %s from %s (encrypted %t), want %s from %s", got.ID, got.Sender, got.Mautrix.WasEncrypted, sent, bot.UserID())
	}
	raw := matrixtest.WaitEvent(t, eve, room, func(e *event.Event) bool { return e.ID == sent })
	if raw.Type != event.EventEncrypted {
		t.Errorf("the raw client saw a %s", raw.Type)
	}
	if again := srv.NewClient(t, "officer"); again.UserID() != officer.UserID() || again.DeviceID() == officer.DeviceID() {
		t.Errorf("a second NewClient is %s/%s", again.UserID(), again.DeviceID())
	}
}

func TestEventually(t *testing.T) {
	tries := 0
	matrixtest.Eventually(t, func() error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if tries != 3 {
		t.Errorf("cond ran %d times", tries)
	}
}

// TestFederationDistinctHosts: servers with host names of their own federate through the
// test's proxy, as TestFederation's do.
func TestFederationDistinctHosts(t *testing.T) {
	servers := matrixtest.NewFederation(t, 2, matrixtest.DistinctHosts())
	a, b := servers[0], servers[1]
	if !strings.HasPrefix(a.ServerName, "a.localhost:") || !strings.HasPrefix(b.ServerName, "b.localhost:") {
		t.Fatalf("server names %s, %s", a.ServerName, b.ServerName)
	}
	if addr, ok := matrixtest.LoopbackAddr(b.ServerName); !ok || addr != b.FederationAddr() {
		t.Errorf("LoopbackAddr(%s) = %s, %v; the listener is %s", b.ServerName, addr, ok, b.FederationAddr())
	}
	if _, ok := matrixtest.LoopbackAddr("matrix.example.org:8448"); ok {
		t.Error("LoopbackAddr maps a name that is not .localhost")
	}
	alice, bob, room := federatedRoom(t, a, b)
	if _, err := bob.SendText(t.Context(), room.RoomID, "from b.localhost"); err != nil {
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, alice, room.RoomID, "from b.localhost")
}
