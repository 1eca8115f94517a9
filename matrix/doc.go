// Package matrix is samtal's typed Matrix client: login, rooms, rich messages, a durable
// outbox for sends that are never lost and never doubled, and restart-safe receiving.
//
// A program opens the shared database once, makes a Client, and sends:
//
//	db, _ := matrix.OpenDatabase(ctx, "samtal.db") // or a postgres:// URL
//	c, _ := matrix.New(ctx, matrix.Options{HomeserverURL: url, Login: matrix.Password(user, pw), DB: db})
//	p, _ := c.Send(ctx, room, matrix.Notice("Case 4711 updated"), matrix.SendOptions{IdempotencyKey: "case-4711/3"})
//	eventID, err := p.Wait(ctx)
//
// Send stores the message before it goes out, with a transaction ID that makes a retry
// harmless, and asks the homeserver nothing: it works while the server is down, and New
// starts offline with a stored session. After a crash the outbox checks the room before
// sending again. Items for one room go in order, rooms in parallel; rate limits, server errors
// and outages back off. A failure stays typed when waited on later or after a restart.
//
// One process owns a SQLite database. Processes that share a session on PostgreSQL share the
// rooms: a room's lane is leased by one of them at a time, and taken over when its holder
// dies (OutboxOptions.LeaseDuration). The Syncer hands
// events to handlers and commits its position only after they return, so a crash repeats a
// batch rather than skipping it.
//
// Errors are typed: *HTTPError carries the Matrix errcode, and errors.Is works with
// ErrRateLimited, ErrForbidden, ErrNotFound, ErrUnknownToken, ErrTooLarge, ErrUnreachable,
// ErrIdempotencyConflict and the input errors ErrInvalidRoom, ErrInvalidUserID and
// ErrInvalidContent.
//
// The package wraps maunium.net/go/mautrix, which stays reachable through Client.Mautrix for
// what it does not wrap. It does no end-to-end encryption itself: it refuses to send into an
// encrypted room until package e2ee plugs encryption in (ErrEncryptionRequired).
package matrix
