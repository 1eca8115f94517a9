package matrix_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// sendAsInDoc is the code of the package documentation, word for word (TestDocSnippets
// checks), with what it leaves open closed after it.
func sendAsInDoc(ctx context.Context, url, user, pw string, room id.RoomID) (id.EventID, error) {
	db, _ := matrix.OpenDatabase(ctx, "samtal.db") // or a postgres:// URL
	c, _ := matrix.New(ctx, matrix.Options{HomeserverURL: url, Login: matrix.Password(user, pw), DB: db})
	p, _ := c.Send(ctx, room, matrix.Notice("Case 4711 updated"), matrix.SendOptions{IdempotencyKey: "case-4711/3"})
	eventID, err := p.Wait(ctx)
	c.Close()
	db.Close()
	return eventID, err
}

// TestDocExample runs the package documentation's code against a homeserver, in a room of the
// same account without encryption (the package has none of its own).
func TestDocExample(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "casebot")
	other := srv.NewClient(t, "casebot") // the account's other device makes the room
	officer := srv.Client(t, "officer")
	room, err := other.CreateRoom(t.Context(), matrix.RoomSpec{Encrypted: new(false), Invite: []id.UserID{officer.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	sent, err := sendAsInDoc(t.Context(), srv.URL, "casebot", pw, room)
	if err != nil {
		t.Fatal(err)
	}
	if got := matrixtest.WaitMessage(t, officer, room, "Case 4711 updated"); got.ID != sent {
		t.Errorf("the officer read %s, want %s", got.ID, sent)
	}
}

// TestDocSnippets: the code in the package documentation is code in this file.
func TestDocSnippets(t *testing.T) {
	blocks, err := snippet.PackageDoc("doc.go")
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no code in the package documentation (%v)", err)
	}
	for _, b := range blocks {
		if ok, err := snippet.In("doc_test.go", b); err != nil || !ok {
			t.Errorf("this snippet of doc.go is not in doc_test.go (%v):\n%s", err, b)
		}
	}
}
