// Package federation makes the agencies' federation one signed document that the rest of
// samtal reads: who belongs (agency, organisation number, contact), which homeservers they
// run, which email domains are theirs and how an address maps to a Matrix ID.
//
// The coordinating body publishes the list as a JWS (EdDSA or ES256, see Sign and
// GenerateKey); every samtal is configured with the list's URL and public key:
//
//	key, err := federation.ParsePublicKey(pemBytes)
//	w, err := federation.NewWatcher("https://federation.example/list.jws", key,
//		federation.Options{CacheFile: "/var/lib/samtal/federation.jws"})
//	go w.Run(ctx) // refreshes every 15 minutes
//
// A list is taken only when its signature verifies, it is valid now and its version is
// higher than the last good list's; anything else (tampered, expired, another key, a lower
// version, too large, the list server down) is refused with a typed error (ErrSignature,
// ErrExpired, ErrOlderVersion, ErrTooLarge, ErrUnavailable ...), logged, reported to
// Options.OnRefresh, and the last good list stays in use. There is never a fallback to
// allowing everyone: before the first good list there is none (ErrNoList) and every question
// is answered "no". An expired list stays in use until a newer one comes (it allows only
// members), with an ERROR line on each refresh.
//
// The list must name the agency's own server: an ACL that shuts out one's own server is
// refused (matrix.ErrInvalidContent), so without it no case room is created.
//
// What reads the list:
//   - Case rooms: matrix.Options{CaseRoomACL: w} gives every new CaseRoom an
//     m.room.server_acl allowing the members' servers only, IP literals refused; a
//     Reconciler keeps the ACLs of existing rooms current when the list changes.
//   - Invites: matrix.AutoJoinPolicy{AllowServer: w.HasServer} accepts invites from members.
//   - The identity directory: w.Member(emailDomain) gives the agency's server and its
//     localpart rule (Member.UserID maps an address); w.MemberByServer(name) the reverse.
//   - The mail gateway: w.HasDomain(domain) for "senders from member domains only".
//
// Check (and `samtal federation check`) tells whether each member server is ready to
// federate: discovery, TLS certificate, signed server keys, federation version, client
// .well-known, and a profile query over federation from our own server.
//
// What Dendrite 0.13.8 enforces, as TestMembersOnly shows on three real servers: a server
// the ACL refuses cannot join (make_join answers 403 "Forbidden by server ACLs"), and the
// events it sends in a transaction are dropped.
//
// What it does not do: server ACLs are enforced by the homeservers, not by samtal, and only
// as well as they do it. Server ACLs match hosts without port, so two servers on one host
// cannot be told apart. Dendrite 0.13.8 (checked in its source, roomserver/acls) matches ACL
// patterns anywhere in the host name rather than the whole of it, so allowing
// "a.example" also admits "a.example.attacker.net" there; it checks the ACL against the
// server that delivers a transaction or asks to join, so an event of a refused server
// relayed by a member is not caught by the ACL. An ACL removes nobody from a room: the
// users of a server taken off the list stay members, but what their server sends is refused.
package federation
