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
// is created from a matrix.RoomSpec template with Client.EnsureRoom. There is no catch-all
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
// Operations. Mails that end DATA at the same time share one transaction, and so one fsync
// (group commit): a committer goroutine takes every mail waiting, and each waiter hears its own
// spool ID; a failed transaction fails every mail in it with 451 4.3.0. On PostgreSQL several
// Gateways share one spool: a worker claims due deliveries with SELECT ... FOR UPDATE SKIP
// LOCKED and holds them for Options.ClaimLease, after which a dead instance's work is taken
// over; the instances share one client session, whose outbox keeps a mail posted by two of them
// posted once. Options.Metrics receives counts (SMTP replies by code, delivery outcomes, DMARC
// results) and Gateway.SpoolStats the spool's depth and oldest age. Gateway.Shutdown stops
// gracefully: new transactions get 421 4.3.2, those under way finish, each connection closes as
// its transaction ends. OpenSpool lets an administrator list and retry dead mail without a
// Gateway. The samtal command runs all of this as a daemon: samtal gateway --config.
//
// Conversion. Parse and Convert read MIME (github.com/emersion/go-message) in any charset:
// text/plain, text/html (sanitized with matrix.SanitizeHTML; remote images are dropped),
// multipart/alternative and multipart/mixed, RFC 2047 encoded subjects and names. The message
// starts with a compact header (sender name and address, subject) and always has a good
// plaintext body; control characters, NUL and bidi overrides are removed. What could not be read
// is said in the message rather than dropped silently, and mail that says it was sent automatically is marked so.
//
// Attachments follow the mail as files (Client.SendFile; encrypted in encrypted rooms), under
// safe names; one over the homeserver's upload limit is replaced by a notice.
//
// Not done yet (issue 10): no STARTTLS, implicit TLS or AUTH; no SPF, DKIM or DMARC, so an
// allow-list checks an unauthenticated envelope sender; no per-sender rate limit; MIME depth
// and part count are capped when converting, not refused at DATA; no threads
// from In-Reply-To and References; no inline cid: images, message/rfc822 or calendar
// rendering; automated mail is marked (Mail.Automated) but bounces are not parsed; no IMAP
// poller. Reply codes sent inside STARTTLS are not seen by the reply counter of Options.Metrics,
// which reads them on the plain connection.
package mailbridge
