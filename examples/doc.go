// Package examples holds small runnable programs, one per user story, each in its own
// directory with its own test against a real homeserver:
//
//   - notify-case: a case system posts updates into one room per case, created with the first
//     update, each update sent exactly once (EnsureRoom, CaseNotification, idempotent Send).
//   - echo-bot: a bot that joins the rooms trusted people invite it to and answers "!echo TEXT"
//     (Syncer, AutoJoinPolicy, Commands).
//   - e2ee-bot: echo-bot in end-to-end encrypted rooms, with cross-signing, recovery and a
//     trust policy (e2ee.Enable, Bootstrap, Recover, AcceptFrom).
//   - federation-list: the agencies' federation list signed with a key in a file, published,
//     loaded, and a case room only members' servers may take part in (federation.Sign,
//     Watcher, matrix.Options.CaseRoomACL).
//   - mail-gateway: the email gateway in a program of its own: mail to an address is posted
//     into a room, spooled durably first, stopped gracefully (mailbridge.New, Serve, Shutdown).
//   - find-colleague: find a colleague in any agency by email and start an encrypted direct
//     chat (identity.Directory, StartChat).
//   - offboarding: a daily reconcile against LDAP and a SCIM endpoint that removes people who
//     left from the agency's rooms (identity.Reconciler, LDAPSource, SCIM).
//   - oidc-login: a web application that signs an officer in with the agency's OpenID provider
//     and posts into a room as that officer (identity.SignIn, Mapper, an appservice login).
//
// readme_test.go runs the Go code of the repository's README.md.
//
// Build and run them with the pure-Go Olm: go run -tags goolm ./examples/notify-case
package examples
