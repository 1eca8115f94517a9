package identity_test

import (
	"context"
	"net/http"
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
	whoamiAtOnce(t, f.URL, stale, 4, func(int) (*http.Client, error) {
		tr, err := identity.NewTransport(context.Background(), db, "", identity.TransportOptions{})
		if err != nil {
			return nil, err
		}
		return tr.Client(), nil
	})
	var gen int
	if err := db.QueryRow(context.Background(), `SELECT generation FROM samtal_identity_oauth WHERE name = 'default'`).Scan(&gen); err != nil || gen != 1 {
		t.Errorf("generation %d (%v), want 1: one refresh", gen, err)
	}
	if err := sendAndWait(t, c, "after four instances refreshed"); err != nil {
		t.Errorf("send: %v", err)
	}
}
