// Package e2ee adds end-to-end encryption to a matrix.Client, on mautrix's pure-Go Olm and
// Megolm (build with -tags goolm).
//
//	key, _ := e2ee.LoadOrCreatePickleKey("pickle.key") // 0600, beside the database; never a constant
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
// # Who gets the room key
//
// Messages go out encrypted with the room's current outbound room key (a Megolm session),
// which is shared, before the first message that uses it, with every device of every member
// who is joined or invited, subject to Options.ShareWith. Invitees get it because a room's
// history is readable by those invited (history visibility "shared" or "invited", the default
// of samtal's presets): an invitee who joins reads what was said since the invitation. What a
// caller can rely on:
//
//   - Removals by this client: Client.Kick, Ban (and withdrawing an invite with Kick) and
//     Leave discard the room key before the request goes out, and sends into the room wait
//     for them; the next message uses a new key that the removed user's devices never get,
//     even if the process is killed right after the removal.
//   - Removals by others, with a Syncer running (matrix.Client.Syncing): the next message
//     after the Syncer has seen the removal (one sync round trip) uses a new key.
//   - Removals by others, without a Syncer: before an encrypted send the client reads the
//     room's members when it last did more than MemberCheckInterval (1 s) ago, so a send that
//     starts a second after a removal uses a new key.
//   - New devices: a client with a Syncer learns of them from sync; one without queries the
//     members' devices on its first send into a room in each process and then at most every
//     DeviceCheckInterval (10 s). A new device gets the next key.
//   - New members: before every encrypted send, the room's members (as the state store has
//     them: from sync, or from the member read above) are compared with who was there when
//     the current key was started; anyone joined or invited since makes the message start a
//     new key, which reaches them. This holds across restarts and whatever sync showed of
//     the membership changes in between.
//   - A member who rejoins gets keys for what is sent after the rejoin only; key requests are
//     answered for this account's own verified devices, for devices that had the key, and for
//     devices that were refused it while their user was in the room and now meet ShareWith.
//
// # Keys that do not arrive
//
// Each room key that arrives is stored in one transaction with the Olm state that carried it,
// so a process killed at any moment loses none. A message whose key is missing is kept; after
// 3 s the key is asked for from the sender's device and this account's other devices (again
// with growing intervals), looked up in the key backup, and the message is handed out when the
// key comes. Machine.Stats counts missing keys by reason and how they were recovered, and room
// key rotations by cause; RoomKeyStatus says whom a room's current key was shared with.
//
// When the local store and the homeserver disagree about the device, Enable fails with an
// error that says what happened and what to do (ErrWrongPickleKey, ErrKeysGoneFromServer,
// ErrStoreLost).
package e2ee
