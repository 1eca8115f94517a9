package e2ee_test

import (
	"context"
	"testing"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/snippet"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// enableAsInDoc is the code of the package documentation, word for word (TestDocSnippets
// checks).
func enableAsInDoc(ctx context.Context, client *matrix.Client) (*e2ee.Machine, error) {
	key, _ := e2ee.LoadOrCreatePickleKey("pickle.key") // 0600, beside the database; never a constant
	m, err := e2ee.Enable(ctx, client, e2ee.Options{PickleKey: key})
	return m, err
}

// TestDocExample runs the package documentation's code on a client of a real homeserver.
func TestDocExample(t *testing.T) {
	srv := matrixtest.NewServer(t)
	c := srv.NewClient(t, "casebot")
	t.Chdir(t.TempDir())
	m, err := enableAsInDoc(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !c.Encrypting() || m.Fingerprint() == "" {
		t.Errorf("after the doc's code: encrypting %v, fingerprint %q", c.Encrypting(), m.Fingerprint())
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
