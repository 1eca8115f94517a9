package examples_test

// This file holds the Go code of README.md, word for word (TestReadmeSnippets checks), and runs
// it: TestNotify takes the quick start through a real Dendrite, encrypted, with a second
// client reading the message.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// notifyCase posts a decision into the room of case 4711, creating the room and inviting the
// officer the first time.
func notifyCase(ctx context.Context, homeserver string, officer id.UserID) (id.EventID, error) {
	db, err := matrix.OpenDatabase(ctx, "samtal.db") // or a postgres:// URL; one per deployment
	if err != nil {
		return "", err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: homeserver,                                                // such as https://matrix.agency.example
		Login:         matrix.Password("casebot", os.Getenv("CASEBOT_PASSWORD")), // used once; the session is stored
		DB:            db,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	key, err := e2ee.LoadOrCreatePickleKey("casebot.pickle-key") // 0600; never a constant in code
	if err != nil {
		return "", err
	}
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: key}) // the device's keys live in db
	if err != nil {
		return "", err
	}
	defer m.Close()

	alias := id.RoomAlias("#case-4711:" + c.UserID().Homeserver())
	room, _, err := c.EnsureRoom(ctx, alias, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer}})
	if err != nil {
		return "", err
	}
	note, err := matrix.CaseNotification{CaseID: "4711", Title: "Decision made", Link: "https://cases.agency.example/4711"}.Message()
	if err != nil {
		return "", err
	}
	p, err := c.Send(ctx, room, note, matrix.SendOptions{IdempotencyKey: "case-4711/decision"})
	if err != nil {
		return "", err
	}
	return p.Wait(ctx) // the homeserver has accepted the event
}

// setUpRecovery bootstraps the account's encryption and returns its recovery key.
func setUpRecovery(ctx context.Context, m *e2ee.Machine) (string, error) {
	return m.Bootstrap(ctx, e2ee.PasswordAuth("casebot", os.Getenv("CASEBOT_PASSWORD")), e2ee.BootstrapOptions{})
}

func TestNotify(t *testing.T) {
	srv := matrixtest.NewServer(t) // real Dendrite on a loopback port, stopped with the test
	_, password := srv.RegisterUser(t, "casebot")
	t.Setenv("CASEBOT_PASSWORD", password)
	t.Chdir(t.TempDir())                                           // notifyCase keeps samtal.db and its pickle key here
	officer := srv.NewClient(t, "officer", matrixtest.Encrypted()) // a samtal client, its store in t.TempDir()

	sent, err := notifyCase(t.Context(), srv.URL, officer.UserID())
	if err != nil {
		t.Fatal(err)
	}
	room, err := officer.Join(t.Context(), "#case-4711:"+srv.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	got := matrixtest.NewRecorder(t, officer, room).Wait(t, func(e *matrix.Event) bool { return e.ID == sent })
	if !got.Mautrix.WasEncrypted || !strings.Contains(got.Text(), "Decision made") {
		t.Errorf("the officer read %q (encrypted: %t)", got.Text(), got.Mautrix.WasEncrypted)
	}
}

// TestReadmeRecovery runs setUpRecovery from README.md on a new encrypted client.
func TestReadmeRecovery(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "casebot")
	t.Setenv("CASEBOT_PASSWORD", password)
	ctx := t.Context()
	db, err := matrix.OpenDatabase(ctx, filepath.Join(t.TempDir(), "samtal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("casebot", password), DB: db})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: []byte("readme test pickle key, 32 bytes")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, err := setUpRecovery(ctx, m)
	if err != nil || key == "" {
		t.Fatalf("setUpRecovery: %q, %v", key, err)
	}
}

// TestReadmeSnippets: every Go snippet of README.md is in this file, so it is compiled and
// run; a README edit that is not made here too fails.
func TestReadmeSnippets(t *testing.T) {
	blocks, err := snippet.Markdown(filepath.Join("..", "README.md"), "go")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d Go snippets, want at least 3", len(blocks))
	}
	for _, b := range blocks {
		if ok, err := snippet.In("readme_test.go", b); err != nil || !ok {
			t.Errorf("this snippet of README.md is not in readme_test.go (%v):\n%s", err, b)
		}
	}
}
