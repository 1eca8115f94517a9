package matrix_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestPostgres runs the session store and the outbox on a real PostgreSQL: schema, ordered
// sends, idempotency keys, and a restart that resumes the stored session.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts PostgreSQL (about 10 s)")
	}
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	bob := srv.Client(t, "bob")
	db, err := matrix.OpenDatabase(t.Context(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	alice := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", pw), DB: db})
	rooms := []id.RoomID{sharedRoom(t, alice, bob), sharedRoom(t, alice, bob)}
	var want []string
	var last *matrix.Pending
	for i := range 10 {
		want = append(want, fmt.Sprintf("pg %d", i))
		for _, r := range rooms {
			p, err := alice.Send(t.Context(), r, matrix.Text(want[i]), matrix.SendOptions{IdempotencyKey: fmt.Sprintf("%s/%d", r, i)})
			if err != nil {
				t.Fatal(err)
			}
			last = p
		}
	}
	if _, err := last.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	device := alice.DeviceID()
	alice.Close()

	again := newClientWith(t, matrix.Options{DB: db})
	if again.DeviceID() != device {
		t.Errorf("restarted on device %s, want %s", again.DeviceID(), device)
	}
	// Repeating the last send of each room is a no-op that waits for what the first run left.
	for _, r := range rooms {
		p, err := again.Send(t.Context(), r, matrix.Text(want[9]), matrix.SendOptions{IdempotencyKey: fmt.Sprintf("%s/%d", r, 9)})
		if err != nil || !p.Duplicate {
			t.Fatalf("repeat after restart: %+v, %v; want a duplicate", p, err)
		}
		if _, err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rooms {
		assertPosted(t, bob, r, again.UserID(), want)
	}
}
