// Package e2ee adds end-to-end encryption to a matrix.Client, on mautrix's pure-Go Olm and
// Megolm (build with -tags goolm).
//
//	key, _ := e2ee.LoadOrCreatePickleKey("/etc/case-bot/pickle.key")
//	m, err := e2ee.Enable(ctx, client, e2ee.Options{PickleKey: key})
//
// After Enable, Client.Send and SendFile encrypt in encrypted rooms (files are encrypted
// before upload), and the client's Syncer decrypts what it receives; events whose keys have
// not arrived are kept and handed out when they do. The crypto store lives in the client's
// database, one Olm account per session and device, encrypted with the pickle key, so the
// device keeps its keys across restarts.
//
// Trust is a policy: Options.ShareWith decides whose devices get room keys, Options.AcceptFrom
// whose messages are handed out; each decrypted event says how trusted its sender's device was
// (Event.Mautrix.TrustState).
//
// When the local store and the homeserver disagree about the device, Enable fails with an
// error that says what happened and what to do (ErrWrongPickleKey, ErrKeysGoneFromServer,
// ErrStoreLost).
package e2ee
