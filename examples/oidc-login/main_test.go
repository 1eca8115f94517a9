package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"maunium.net/go/mautrix/appservice"

	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestOIDCLogin: an officer signs in at the agency's OP (zitadel's example OP, in this process)
// and posts through the application; a colleague in the room, on a real Dendrite, reads the
// message from the officer's own Matrix ID.
func TestOIDCLogin(t *testing.T) {
	reg := appservice.CreateRegistration()
	reg.ID = "case-desk"
	reg.URL = "http://127.0.0.1:9" // the homeserver never calls the application here
	reg.SenderLocalpart = "case-desk"
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@.*-example\.se:.*`), false)
	srv := matrixtest.NewServer(t, matrixtest.WithAppService(reg))
	colleague := srv.NewClient(t, "colleague")
	room, err := colleague.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.PublicRoom, Name: "Case 4711"})
	if err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, colleague, room)

	// The application's address first: the OP registers its callback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	// The agency's OP: zitadel's example OP in this process (internal/oidctest), which knows
	// jane.smith (jane.smith@example.se) and the application as a web client.
	op := oidctest.Start(t, storage.WebClient("case-desk", "desk-secret", base+"/callback"))
	issuer := op.Issuer

	a, err := newApp(t.Context(), config{Issuer: issuer, ClientID: "case-desk", ClientSecret: "desk-secret", BaseURL: base,
		Homeserver: srv.URL, ServerName: srv.ServerName, ASToken: reg.AppToken, Room: room,
		DB: t.TempDir() + "/desk.db", CookieKey: []byte("0123456789abcdef0123456789abcdef"),
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	app := httptest.NewUnstartedServer(a)
	app.Listener.Close()
	app.Listener = ln
	app.Start()
	defer app.Close()

	// The officer's browser: sign in at the OP, back to the application.
	browser := oidctest.NewBrowser()
	resp := browser.LoginAtOP(t, base+"/login", "jane.smith")
	home, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	officer := srv.UserID("jane.smith-example.se")
	if !strings.Contains(string(home), "Signed in as "+string(officer)) {
		t.Fatalf("after sign-in: %d %q", resp.StatusCode, home)
	}

	resp, err = browser.PostForm(base+"/post", url.Values{"message": {"Beslut fattat i ärende 4711"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("post: %d %q", resp.StatusCode, body)
	}
	got := inbox.WaitText(t, "Beslut fattat i ärende 4711")
	if got.Sender != officer {
		t.Errorf("the message is from %s, want the officer %s", got.Sender, officer)
	}

	// Without the application's session cookie, nothing is posted.
	resp, err = http.PostForm(base+"/post", url.Values{"message": {"forged"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("post without a session: %d", resp.StatusCode)
	}
}
