package identity_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/oidctest"
	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// TestTokensPostgres runs the OAuth token store on a real PostgreSQL: a login, then four
// Transports (as four gateway instances sharing the database) refreshing at once, which end
// with one refresh and the same valid pair.
func TestTokensPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	o := oidctest.Start(t)
	f := oidctest.StartFront(t, o)
	db, err := matrix.OpenDatabase(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, _ := oauthClient(t, f, db)
	stale := c.Session().AccessToken
	f.ExpireAll()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := identity.NewTransport(context.Background(), db, "", identity.TransportOptions{})
			if err != nil {
				errs[i] = err
				return
			}
			req, _ := http.NewRequest(http.MethodGet, f.URL+"/_matrix/client/v3/account/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+stale)
			resp, err := tr.Client().Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
	var gen int
	if err := db.QueryRow(context.Background(), `SELECT generation FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&gen); err != nil || gen != 1 {
		t.Errorf("generation %d (%v), want 1: one refresh", gen, err)
	}
	if err := sendAndWait(t, c, "after four instances refreshed"); err != nil {
		t.Errorf("send: %v", err)
	}
}
