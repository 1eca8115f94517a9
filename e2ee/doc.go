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
// Bootstrap sets up cross-signing, secret storage and a server-side key backup and returns a
// recovery key to keep; Recover uses it on a new device, which is then cross-signed and
// restores the backup, so it reads history from before it existed. New room keys go to the
// backup automatically, and a key that is missing is looked up there before giving up.
//
// Trust is a policy: Options.ShareWith decides whose devices get room keys, Options.AcceptFrom
// whose messages are handed out; each decrypted event says how trusted its sender's device was
// (Event.Mautrix.TrustState).
//
// When the local store and the homeserver disagree about the device, Enable fails with an
// error that says what happened and what to do (ErrWrongPickleKey, ErrKeysGoneFromServer,
// ErrStoreLost).
package e2ee
