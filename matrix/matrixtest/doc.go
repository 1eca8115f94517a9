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
// A vendor's own integration test reads:
//
//	func TestCaseNotification(t *testing.T) {
//		srv := matrixtest.NewServer(t)
//		bot := srv.Client(t, "casebot")
//		officer := srv.Client(t, "officer")
//
//		room, err := bot.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Invite: []id.UserID{officer.UserID}})
//		if err != nil {
//			t.Fatal(err)
//		}
//		if _, err := officer.JoinRoomByID(t.Context(), room.RoomID); err != nil {
//			t.Fatal(err)
//		}
//		if _, err := bot.SendText(t.Context(), room.RoomID, "Case 4711 updated"); err != nil {
//			t.Fatal(err)
//		}
//		matrixtest.WaitMessage(t, officer, room.RoomID, "Case 4711 updated")
//	}
//
// Outage tests stop and restart a server with Server.Stop and Server.Start; the data and the
// address survive. When a test fails, the end of the server's log is printed with it.
//
// matrixtest does not fake anything: what passes here passes against a real homeserver. It does
// not start Synapse or Conduit, and it is not meant for production use (see `samtal dev` for a
// development server).
package matrixtest
