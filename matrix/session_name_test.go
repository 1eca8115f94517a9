package matrix_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSessionNameOfAnotherAccount: New for a second account on the same database, under a
// session name that already holds the first account's session (the default one, or a name
// given twice by mistake), fails with ErrSessionInUse naming the session, not its token. Before,
// New quietly returned a client for the first account: the second account's sends went out as
// the first, and both shared one sync position. Under names of their own the two are kept apart.
func TestSessionNameOfAnotherAccount(t *testing.T) {
	srv := matrixtest.NewServer(t)
	aliceID, alicePW := srv.RegisterUser(t, "alice")
	bobID, bobPW := srv.RegisterUser(t, "bob")
	db := testDB(t)
	ctx := context.Background()
	alice := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", alicePW), DB: db})
	ops := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", alicePW), DB: db, SessionName: "ops"})

	for _, tc := range []struct {
		name string
		opts matrix.Options
		want string // the session named in the error
	}{
		{"password login, default session", matrix.Options{Login: matrix.Password("bob", bobPW)}, `"default"`},
		{"password login with the user ID", matrix.Options{Login: matrix.Password(string(bobID), bobPW)}, `"default"`},
		{"password login, named session", matrix.Options{Login: matrix.Password("bob", bobPW), SessionName: "ops"}, `"ops"`},
		{"Options.UserID", matrix.Options{UserID: bobID, Login: matrix.Password("bob", bobPW), SessionName: "ops"}, `"ops"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.HomeserverURL, opts.DB, opts.Logger = srv.URL, db, quietLogger(t)
			c, err := matrix.New(ctx, opts)
			if err == nil {
				c.Close()
				t.Fatalf("New for %s under a session of %s: got a client for %s, want ErrSessionInUse", bobID, aliceID, c.UserID())
			}
			if !errors.Is(err, matrix.ErrSessionInUse) {
				t.Fatalf("New: %v, want ErrSessionInUse", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name the session %s", msg, tc.want)
			}
			for _, secret := range []string{alice.Session().AccessToken, ops.Session().AccessToken, alicePW, bobPW} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q holds a token or password", msg)
				}
			}
		})
	}

	// The same account again under its name is its stored session, as before.
	again := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("alice", alicePW), DB: db})
	if again.UserID() != aliceID || again.DeviceID() != alice.DeviceID() {
		t.Errorf("alice again: %s %s, want the stored session %s %s", again.UserID(), again.DeviceID(), aliceID, alice.DeviceID())
	}
	// Under a name of its own, the second account is kept apart.
	bob := newClientWith(t, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("bob", bobPW), DB: db, SessionName: "bob"})
	if bob.UserID() != bobID {
		t.Errorf("bob's own session is %s, want %s", bob.UserID(), bobID)
	}
}
