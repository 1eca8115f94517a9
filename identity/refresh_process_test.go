package identity_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/matrix"
)

// TestRefreshAcrossProcesses: two processes (this test binary, started twice) share the
// SQLite database of a logged-in client and find its access token refused at the same
// moment. Each refreshes through its own Transport; the OP's refresh tokens are single-use,
// so two refreshes with the same token would log one out. Both get through, and the client
// that logged in goes on with the pair they left.
func TestRefreshAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes")
	}
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	path := filepath.Join(t.TempDir(), "samtal.db")
	db, err := matrix.OpenDatabase(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, _ := oauthClient(t, f, db)
	stale := c.Session().AccessToken
	f.ExpireAll()

	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestRefreshHelperProcess$", "-test.count=1")
			// The stale token is handed over as a file, not on the command line.
			tokFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokFile, []byte(stale), 0o600); err != nil {
				errs[i] = err
				return
			}
			cmd.Env = append(os.Environ(), "IDENTITY_HELPER_DB="+path, "IDENTITY_HELPER_URL="+f.URL, "IDENTITY_HELPER_TOKEN_FILE="+tokFile)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}()
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || !strings.Contains(outs[i], "helper: status 200") {
			t.Errorf("process %d: %v\n%s", i, errs[i], lastLines(outs[i], 10))
		}
	}
	if n := strings.Count(outs[0]+outs[1], "access token refreshed"); n != 1 {
		t.Errorf("%d refreshes between the two processes, want 1 (the other picks up its pair)", n)
	}
	if err := sendAndWait(t, c, "after two processes refreshed"); err != nil {
		t.Errorf("send: %v", err)
	}
}

// TestRefreshHelperProcess is the second process of TestRefreshAcrossProcesses; alone it
// does nothing.
func TestRefreshHelperProcess(t *testing.T) {
	dbPath := os.Getenv("IDENTITY_HELPER_DB")
	if dbPath == "" {
		t.Skip("run by TestRefreshAcrossProcesses")
	}
	ctx := context.Background()
	db, err := matrix.OpenDatabase(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tok, err := os.ReadFile(os.Getenv("IDENTITY_HELPER_TOKEN_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := identity.NewTransport(ctx, db, "", identity.TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, os.Getenv("IDENTITY_HELPER_URL")+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := tr.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fmt.Printf("helper: status %d\n", resp.StatusCode)
	if resp.StatusCode != 200 {
		t.Fail()
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
