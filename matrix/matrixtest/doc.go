// Package matrixtest starts real Matrix homeservers for tests, the way net/http/httptest
// starts HTTP servers: one line, a loopback port, a temporary directory, stopped when the test
// ends.
//
// The server is Dendrite (v0.13.8) with SQLite, shared-secret registration, no rate limiting
// unless asked for, and no federation unless NewFederation starts several servers that federate
// with each other. Starting one takes well under a second once the binary exists. The binary
// is $SAMTAL_DENDRITE, else dendrite on PATH, else built once per machine with `go install`
// (a few minutes; it needs Go, a C compiler and the Go module proxy).
//
// NewClient gives a test a samtal client (a *matrix.Client), with encryption if asked, its
// database and crypto store in the test's temporary directory; a Recorder collects what such
// a client receives in a room, decrypted; Eventually retries what a test cannot be told about.
// Client returns a raw mautrix client instead: the independent other party, which sees what
// reached the homeserver and nothing of samtal. A vendor's own integration test reads:
//
//	func TestCaseNotification(t *testing.T) {
//		srv := matrixtest.NewServer(t)
//		bot := srv.NewClient(t, "casebot", matrixtest.Encrypted())
//		officer := srv.NewClient(t, "officer", matrixtest.Encrypted())
//
//		room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "4711", Invite: []id.UserID{officer.UserID()}})
//		if err != nil {
//			t.Fatal(err)
//		}
//		if _, err := officer.Join(t.Context(), string(room)); err != nil {
//			t.Fatal(err)
//		}
//		inbox := matrixtest.NewRecorder(t, officer, room)
//		if _, err := bot.Send(t.Context(), room, matrix.Notice("Case 4711 updated"), matrix.SendOptions{}); err != nil {
//			t.Fatal(err)
//		}
//		inbox.WaitText(t, "Case 4711 updated")
//	}
//
// Outage tests stop and restart a server with Server.Stop and Server.Start; the data and the
// address survive. When a test fails, the end of the server's log is printed with it.
//
// matrixtest does not fake anything: what passes here passes against a real homeserver. It does
// not start Synapse or Conduit, and it is not meant for production use (see `samtal dev` for a
// development server).
package matrixtest
