// Package mailbridge is samtal's email gateway: mail that case and workflow systems (and
// people) send to an agency's addresses is posted into the right Matrix room, with nothing
// lost and nothing doubled.
//
// A program routes addresses to rooms, makes a Gateway for its samtal client, and serves SMTP:
//
//	router, _ := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: "#cases:matrix.agency.example"})
//	gw, _ := mailbridge.New(ctx, mailbridge.Options{Client: client, Router: router, Addr: ":25"})
//	err := gw.ListenAndServe(ctx) // until Close or ctx ends; ErrClosed then
//
// Receiving. The SMTP server (github.com/emersion/go-smtp) advertises SIZE, PIPELINING,
// 8BITMIME, SMTPUTF8 and ENHANCEDSTATUSCODES, and answers with exact codes: an address no
// route accepts gets 550 5.1.1 at RCPT (other recipients of the same mail are not affected), a
// sender not on a route's allow-list 550 5.7.1, too many recipients 452 4.5.3, a mail over
// Options.MaxMessageBytes 552 5.3.4, a header over 256 KiB or Options.MaxHeaderFields 552
// 5.3.4, a line over Options.MaxLineLength 500 5.5.2, an unreadable header 550 5.6.0, a
// connection over Options.MaxConnections 421 4.7.0, and a spool that cannot commit 451 4.3.0,
// so the sender tries again. These replies are the package's error values
// (ErrUnknownRecipient and the others), each an *smtp.SMTPError. postmaster@ is accepted for
// every routed domain, from every sender.
//
// Routing. A Router maps a recipient to a room: static addresses, "+subaddress" forms of them,
// and patterns with a capture ("case-{id}@cases.example.se" to "#case-{id}:server"), whose room
// is created from a matrix.RoomSpec template with Client.EnsureRoom (the capture filled into its
// name, topic and case ID). There is no catch-all
// unless a route is one ("{user}@agency.example"). A mail for several recipients is posted once
// per room.
//
// Nothing lost, nothing doubled. The raw mail and its envelope are committed to a table in the
// shared database (matrix.OpenDatabase; SQLite with synchronous=FULL) before the 250 reply. A
// delivery worker converts each spooled mail and stores it in the client's durable outbox
// (Client.Send) with an idempotency key made from the Message-ID (or, without one, the content)
// and the room, so a mail sent twice is posted once; the spool marks it delivered only after
// that. Failed deliveries, such as while the homeserver is down, are retried with backoff, also
// by the next Gateway after a restart. One that still fails Options.DeadLetterAfter after
// receipt waits as dead in the spool: Gateway.Undelivered lists what is not posted yet, and
// Gateway.Retry revives a dead mail.
//
// Conversion. Parse, ParseWith and Convert read MIME (github.com/emersion/go-message) in any
// charset: text/plain, text/html (sanitized with matrix.SanitizeHTML), multipart/alternative,
// related, mixed and signed, forwarded mail (message/rfc822), calendar invitations, RFC 2047
// encoded subjects and names, RFC 2231 file names. Text in a wrong or missing charset, and
// 8-bit headers, are decoded best effort and said to be. The message starts with a compact
// header (sender name and address, subject, and the sender check: the DMARC result of the
// top-most Authentication-Results header with the gateway's own authserv-id, Options.Domain;
// only a pass reads "verified", never a PGP or S/MIME signature, which are not checked) and
// always has a good plaintext body; quoted history is folded (<details>) in the HTML and cut
// from the plaintext; control characters, NUL and bidi overrides are removed. Images are shown
// only from the mail's own parts (cid:): remote ones, and mxc:// ones of other servers, are
// dropped and never fetched. What could not be read is said in the message rather than dropped
// silently, and mail that says it was sent automatically is marked so.
//
// Attachments follow the mail as files (Client.SendFile; encrypted in encrypted rooms), under
// safe names; one over the homeserver's upload limit (m.upload.size) is named in the message
// instead. An inline image is uploaded and shown in place in a room that is not encrypted, and
// follows as an encrypted image in one that is (media in HTML cannot be encrypted). A mail over
// the event size limit is shortened and followed by the original as mail.eml.
//
// Threads. A conversation by mail is one Matrix thread in each room: the first of its mails to
// arrive is posted as a message, and each later one that names any mail of it (In-Reply-To,
// References) goes into that message's thread (m.thread), with its attachments; a reply that
// arrives before the mail it answers starts the thread, and that mail joins it. The mapping
// from Message-ID to room, event and thread root is kept in the database (Gateway.Thread).
//
// Not done yet (issue 10): no STARTTLS, implicit TLS or AUTH; no SPF, DKIM or DMARC, so an
// allow-list checks an unauthenticated envelope sender; no per-sender rate limit; MIME depth
// and part count are capped when converting, not refused at DATA; no group commit; automated
// mail is marked (Mail.Automated) but bounces are not parsed; no IMAP poller; no claiming of spool work by several instances on PostgreSQL; no metrics.
package mailbridge
