package matrixtest_test

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// These examples are tests of your own, written as function literals because an example
// cannot take a *testing.T; TestExamples runs each of them against a real homeserver.

// A test starts a homeserver as it would an httptest.Server; raw mautrix clients are the
// other party, seeing what reached the server and nothing of samtal.
func ExampleNewServer() {
	testWelcome := func(t *testing.T) {
		srv := matrixtest.NewServer(t) // Dendrite on a loopback port, stopped when the test ends
		anna := srv.Client(t, "anna")  // a mautrix client, registered on first use
		room, err := anna.CreateRoom(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anna.SendText(t.Context(), room.RoomID, "welcome"); err != nil {
			t.Fatal(err)
		}
		matrixtest.WaitMessage(t, anna, room.RoomID, "welcome")
	}
	exampleTests["NewServer"] = testWelcome
}

// NewClient gives a test a samtal client, here with encryption, since case rooms are
// encrypted; its database and crypto store are in the test's temporary directory.
func ExampleServer_NewClient() {
	testCaseRoom := func(t *testing.T) {
		srv := matrixtest.NewServer(t)
		bot := srv.NewClient(t, "casebot", matrixtest.Encrypted())
		room, _, err := bot.EnsureRoom(t.Context(), id.RoomAlias("#case-4711:"+srv.ServerName),
			matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := bot.Send(t.Context(), room, matrix.Notice("Case 4711 opened"), matrix.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	exampleTests["NewClient"] = testCaseRoom
}

// A Recorder collects what a samtal client receives in a room, decrypted; Wait returns the
// first event that matches.
func ExampleRecorder() {
	testOfficerReads := func(t *testing.T) {
		srv := matrixtest.NewServer(t)
		bot := srv.NewClient(t, "casebot", matrixtest.Encrypted())
		officer := srv.NewClient(t, "officer", matrixtest.Encrypted())
		room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Invite: []id.UserID{officer.UserID()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := officer.Join(t.Context(), string(room)); err != nil {
			t.Fatal(err)
		}
		inbox := matrixtest.NewRecorder(t, officer, room)

		if _, err := bot.Send(t.Context(), room, matrix.Markdown("**Decision made**"), matrix.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		got := inbox.WaitText(t, "**Decision made**")
		if !got.Mautrix.WasEncrypted || !strings.Contains(got.Content.AsMessage().FormattedBody, "<strong>") {
			t.Errorf("officer read %+v", got.Content.AsMessage())
		}
		inbox.Wait(t, func(e *matrix.Event) bool { return e.Type == event.StateMember && e.Sender == officer.UserID() })
	}
	exampleTests["Recorder"] = testOfficerReads
}

// exampleTests holds the examples' tests, by name, once the example functions have run.
var exampleTests = map[string]func(*testing.T){}

func TestExamples(t *testing.T) {
	ExampleNewServer()
	ExampleServer_NewClient()
	ExampleRecorder()
	for _, name := range []string{"NewServer", "NewClient", "Recorder"} {
		t.Run(name, exampleTests[name])
	}
}
