package matrix_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestUnsent: of a sent item, a failed one (a 400 injected by the proxy), one still pending
// (the homeserver is down), another session's item and an ID that is no item, only the
// pending one is unsent; once the homeserver is back and it is sent, none is.
func TestUnsent(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	proxy := newFaultProxy(t, srv.URL)
	db := testDB(t)
	alice := newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("alice", pw), DB: db})
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)

	sent, err := alice.Send(t.Context(), room, matrix.Text("sent"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sent.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	proxy.refuse.Store(1)
	failed, err := alice.Send(t.Context(), room, matrix.Text("refused"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failed.Wait(t.Context()); err == nil {
		t.Fatal("refused send succeeded")
	}
	// Another session in the same database.
	_, cpw := srv.RegisterUser(t, "carol")
	carol := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("carol", cpw), DB: db, SessionName: "carol"})
	other, err := carol.Send(t.Context(), room, matrix.Text("carol's"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	pending, err := alice.Send(t.Context(), room, matrix.Text("while down"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := []int64{sent.ID, failed.ID, pending.ID, other.ID, 1 << 40}
	got, err := alice.Unsent(t.Context(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{pending.ID}; !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
		t.Fatalf("Unsent(%v) = %v, want %v (sent %d, failed %d, other session %d)", ids, got, want, sent.ID, failed.ID, other.ID)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := pending.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := alice.Unsent(t.Context(), ids); err != nil || len(got) != 0 {
		t.Fatalf("Unsent after the send = %v, %v; want none", got, err)
	}
	// More IDs than one query takes.
	many := make([]int64, 1200)
	for i := range many {
		many[i] = pending.ID + int64(i)
	}
	if _, err := alice.Unsent(t.Context(), many); err != nil {
		t.Fatalf("Unsent of %d IDs: %v", len(many), err)
	}
}
