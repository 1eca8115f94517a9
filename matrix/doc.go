// Package matrix is samtal's typed Matrix client: login, rooms, rich messages, a durable
// outbox for sends that are never lost and never doubled, and restart-safe receiving.
//
// It wraps maunium.net/go/mautrix, which stays reachable for what this package does not wrap.
// So far it holds the message builders; the client, outbox and syncer are being built (see
// CHANGELOG.md).
package matrix
