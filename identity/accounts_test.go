package identity_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// TestAccountsSurviveRestart: the mapping kept in the shared database (SQLite here) is the
// same after a restart: a person keeps their ID though their claims changed, the second Åsa
// Öberg keeps the suffix, and a third still cannot take either.
func TestAccountsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "samtal.db")
	open := func(policy identity.CollisionPolicy) (*identity.Mapper, func()) {
		t.Helper()
		db, err := matrix.OpenDatabase(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		ac, err := identity.OpenAccounts(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		return &identity.Mapper{Server: "example.se", Collision: policy, Accounts: ac}, func() { db.Close() }
	}
	mapTo := func(m *identity.Mapper, sub, name string) (id.UserID, error) {
		t.Helper()
		got, err := m.Map(ctx, sub, map[string]any{"preferred_username": name})
		return got.UserID, err
	}

	m, done := open(identity.CollisionSuffix)
	first, err := mapTo(m, "iss a", "Åsa Öberg")
	if err != nil || first != "@asa.oberg:example.se" {
		t.Fatalf("first: %s, %v", first, err)
	}
	second, err := mapTo(m, "iss b", "asa.oberg")
	if err != nil || second != "@asa.oberg-2:example.se" {
		t.Fatalf("second: %s, %v", second, err)
	}
	done()

	m, done = open(identity.CollisionRefuse)
	defer done()
	if got, err := mapTo(m, "iss a", "Åsa Lind"); err != nil || got != first {
		t.Errorf("after the restart the first person is %s (%v), want %s", got, err, first)
	}
	if got, err := mapTo(m, "iss b", "Åsa Öberg"); err != nil || got != second {
		t.Errorf("after the restart the second person is %s (%v), want %s", got, err, second)
	}
	if got, err := mapTo(m, "iss c", "Åsa Öberg"); !errors.Is(err, identity.ErrCollision) {
		t.Errorf("a third Åsa Öberg got %s, %v; want ErrCollision", got, err)
	}
}

// TestAccountsMappingTable runs the 30 names of TestMappingTable through the database table.
func TestAccountsMappingTable(t *testing.T) {
	ac, err := identity.OpenAccounts(context.Background(), openDB(t))
	if err != nil {
		t.Fatal(err)
	}
	mappingTable(t, ac)
}

// TestAccountsPostgresConcurrent: two instances (each its own connection pool, as two
// processes have) share a PostgreSQL database and sign in two different people with the same
// name at the same moment, for many names at once. With CollisionRefuse exactly one of each
// pair gets the localpart and the other ErrCollision; with CollisionSuffix both get one, and
// never the same. The same person signing in at both instances at once gets one ID.
func TestAccountsPostgresConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	dsn := pgtest.New(t)
	var instances [2]*identity.Mapper
	var suffixed [2]*identity.Mapper
	for i := range instances {
		db, err := matrix.OpenDatabase(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		// A pool as an instance has: storage.Open sets no bound on PostgreSQL, and 80 sign-ins
		// at once would pass the test server's max_connections.
		db.RawDB.SetMaxOpenConns(8)
		ac, err := identity.OpenAccounts(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		instances[i] = &identity.Mapper{Server: "example.se", Accounts: ac}
		suffixed[i] = &identity.Mapper{Server: "example.se", Accounts: ac, Collision: identity.CollisionSuffix}
	}
	const names = 40
	type result struct {
		uid id.UserID
		err error
	}
	run := func(ms [2]*identity.Mapper, subject func(name, inst int) string, prefix string) [names][2]result {
		var res [names][2]result
		var wg sync.WaitGroup
		start := make(chan struct{})
		for n := range names {
			for i, m := range ms {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got, err := m.Map(ctx, subject(n, i), map[string]any{"preferred_username": fmt.Sprintf("%s Person %d", prefix, n)})
					res[n][i] = result{got.UserID, err}
				}()
			}
		}
		close(start)
		wg.Wait()
		return res
	}

	refused := run(instances, func(n, i int) string { return fmt.Sprintf("refuse-%d-%d", n, i) }, "Refuse")
	for n, pair := range refused {
		var won, lost int
		for _, r := range pair {
			switch {
			case r.err == nil:
				won++
			case errors.Is(r.err, identity.ErrCollision):
				lost++
			default:
				t.Errorf("name %d: %v", n, r.err)
			}
		}
		if won != 1 || lost != 1 {
			t.Errorf("name %d: %d got the localpart and %d were refused, want 1 and 1: %v, %v", n, won, lost, pair[0].err, pair[1].err)
		}
	}

	suffix := run(suffixed, func(n, i int) string { return fmt.Sprintf("suffix-%d-%d", n, i) }, "Suffix")
	seen := map[id.UserID]bool{}
	for n, pair := range suffix {
		for _, r := range pair {
			if r.err != nil {
				t.Errorf("name %d: %v", n, r.err)
				continue
			}
			if seen[r.uid] {
				t.Errorf("%s given to two people", r.uid)
			}
			seen[r.uid] = true
		}
	}

	same := run(suffixed, func(n, _ int) string { return fmt.Sprintf("same-%d", n) }, "Same")
	for n, pair := range same {
		if pair[0].err != nil || pair[1].err != nil || pair[0].uid != pair[1].uid {
			t.Errorf("name %d: one person signing in at two instances got %s (%v) and %s (%v)", n, pair[0].uid, pair[0].err, pair[1].uid, pair[1].err)
		}
	}
}
