package matrixtest_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestCaseNotification is the test in the package documentation, word for word
// (TestDocSnippets checks).
func TestCaseNotification(t *testing.T) {
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "casebot", matrixtest.Encrypted())
	officer := srv.NewClient(t, "officer", matrixtest.Encrypted())

	room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer.UserID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.Join(t.Context(), string(room)); err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, officer, room)
	if _, err := bot.Send(t.Context(), room, matrix.Notice("Case 4711 updated"), matrix.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	inbox.WaitText(t, "Case 4711 updated")
}

// TestDocSnippets: the code in the package documentation is code in this package's tests.
func TestDocSnippets(t *testing.T) {
	blocks, err := snippet.PackageDoc("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatal("no code in the package documentation")
	}
	for _, b := range blocks {
		if ok, err := snippet.In("doc_test.go", b); err != nil || !ok {
			t.Errorf("this snippet of doc.go is not in doc_test.go (%v):\n%s", err, b)
		}
	}
}
