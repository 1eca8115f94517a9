package matrix_test

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSessionSurvivesRestart: a second New on the same database continues as the same device
// without logging in again.
func TestSessionSurvivesRestart(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "alice")
	db := testDB(t)
	first := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", password), DB: db})
	first.Close()

	again := newClientWith(t, matrix.Options{DB: db}) // no URL, no login: all from the database
	if again.UserID() != first.UserID() || again.DeviceID() != first.DeviceID() {
		t.Fatalf("restarted as %s/%s, want %s/%s", again.UserID(), again.DeviceID(), first.UserID(), first.DeviceID())
	}
	// Two sessions in one database stay apart.
	_, bobPW := srv.RegisterUser(t, "bob")
	bob := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("bob", bobPW), DB: db, SessionName: "bob"})
	if bob.UserID() == again.UserID() {
		t.Fatal("second session overwrote the first")
	}
}

func TestRevokedSession(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "alice")
	db := testDB(t)
	c := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", password), DB: db})
	oldDevice := c.DeviceID()
	if _, err := c.Mautrix().LogoutAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Without a way to log in again, the revoked token is a clear, typed error.
	_, err := matrix.New(t.Context(), matrix.Options{DB: db, Logger: quietLogger(t)})
	if !errors.Is(err, matrix.ErrUnknownToken) {
		t.Fatalf("New with a revoked session: %v, want ErrUnknownToken", err)
	}
	// With a login, it logs in again on a new device and stores that.
	c2 := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", password), DB: db})
	if c2.DeviceID() == oldDevice {
		t.Fatal("still on the revoked device")
	}
	// A client whose token is revoked while it runs gets ErrUnknownToken from Wait (the item
	// stays pending for a new login) and from Err, and nothing is sent.
	if _, err := c2.Mautrix().Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	p, err := c2.Send(t.Context(), id.RoomID("!nowhere:localhost"), matrix.Text("after logout"), matrix.SendOptions{})
	if err == nil {
		_, err = p.Wait(t.Context())
	}
	if !errors.Is(err, matrix.ErrUnknownToken) {
		t.Fatalf("send with revoked token: %v, want ErrUnknownToken", err)
	}
	if !errors.Is(c2.Err(), matrix.ErrUnknownToken) {
		t.Fatalf("Err() = %v, want ErrUnknownToken", c2.Err())
	}
}

func TestLoginErrors(t *testing.T) {
	srv := matrixtest.NewServer(t)
	srv.RegisterUser(t, "alice")
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		opts  matrix.Options
		want  error
		alsoA error
	}{
		{"no database", matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", "x")}, matrix.ErrNoDatabase, nil},
		{"no login", matrix.Options{HomeserverURL: srv.URL, DB: testDB(t)}, matrix.ErrLogin, nil},
		{"wrong password", matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.Password("alice", "wrong-password")}, matrix.ErrLogin, matrix.ErrForbidden},
		{"bad login token", matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.LoginToken("not-a-token")}, matrix.ErrLogin, nil},
		{"JWT not enabled", matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.JWT("e30.e30.sig")}, matrix.ErrLogin, nil},
		{"bad access token", matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.AccessToken("syt_bogus")}, matrix.ErrLogin, matrix.ErrUnknownToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quietLogger(t)
			c, err := matrix.New(ctx, tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.want) || (tc.alsoA != nil && !errors.Is(err, tc.alsoA)) {
				t.Fatalf("error %v, want %v (and %v)", err, tc.want, tc.alsoA)
			}
		})
	}
	// Neither URL nor user ID: nothing to connect to.
	if _, err := matrix.New(ctx, matrix.Options{DB: testDB(t), Login: matrix.Password("a", "b")}); err == nil {
		t.Error("New without HomeserverURL or UserID succeeded")
	}
	if _, err := matrix.New(ctx, matrix.Options{DB: testDB(t), UserID: "not a user id", Login: matrix.Password("a", "b")}); err == nil {
		t.Error("New with an invalid user ID succeeded")
	}
}

func TestAccessTokenAndAppServiceLogin(t *testing.T) {
	reg := appservice.CreateRegistration()
	reg.ID, reg.URL, reg.SenderLocalpart = "gateway", "http://127.0.0.1:9", "gateway-bot"
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@mail_.*`), true)
	srv := matrixtest.NewServer(t, matrixtest.WithAppService(reg))

	asClient, _ := mautrix.NewClient(srv.URL, "", reg.AppToken)
	if _, _, err := asClient.Register(t.Context(), &mautrix.ReqRegister[any]{Username: "mail_anna", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	as := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.AppService(reg.AppToken, "mail_anna")})
	if as.UserID() != srv.UserID("mail_anna") {
		t.Errorf("appservice login as %s", as.UserID())
	}

	raw := srv.Client(t, "carl")
	tok := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, DB: testDB(t), Login: matrix.AccessToken(raw.AccessToken)})
	if tok.UserID() != raw.UserID || tok.DeviceID() != raw.DeviceID {
		t.Errorf("access token login as %s/%s, want %s/%s", tok.UserID(), tok.DeviceID(), raw.UserID, raw.DeviceID)
	}
}

func TestLogoutForgetsSession(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "alice")
	db := testDB(t)
	c := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", password), DB: db})
	if err := c.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := matrix.New(t.Context(), matrix.Options{DB: db, Logger: quietLogger(t)}); !errors.Is(err, matrix.ErrLogin) {
		t.Fatalf("New after Logout: %v, want ErrLogin (no stored session)", err)
	}
}
