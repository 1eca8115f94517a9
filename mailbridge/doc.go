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
// IMAP (the poller's part). For mailboxes that exist already, a Poller takes mail from IMAP
// into the same spool, so conversion, the idempotency key and delivery are the SMTP path's:
//
//	p, _ := gw.NewPoller(mailbridge.IMAPOptions{Addr: "imap.agency.example:993", Username: "cases", Password: pw,
//		Mailboxes: []mailbridge.IMAPMailbox{{Name: "INBOX", Address: "cases@agency.example", Flag: `\Seen`}}})
//	err := p.Run(ctx) // until ctx ends or the Gateway is closed
//
// IMAPOptions is plain data for a config file, but for a TLS config and the
// oauth2.TokenSource. A mailbox with an Address routes all its mail as mail to that address
// (its route's room, template and allow-list); without one, by the recipients in the header
// (Delivered-To, X-Original-To, To, Cc), once per room. A route's allow-list is checked
// against the Return-Path (else From), which is not authenticated. Mail no route takes, or
// over Options.MaxMessageBytes, is left in the mailbox untouched and logged by UID.
//
// Each mailbox has a connection of its own and a checkpoint (UIDVALIDITY and the last UID
// done) in the table samtal_mail_imap_checkpoint, written in the transaction that spools the
// mail: a poller stopped or killed at any point goes on after the last mail spooled, so it
// misses nothing and spools nothing twice. When the server's UIDVALIDITY changes (the mailbox
// was recreated or restored; seen at the latest when IDLE is issued again or the next poll),
// the poller reads the whole mailbox again; mail already posted
// is not posted again, since its idempotency key comes from the Message-ID (or the content)
// and the room. On the first start the mail already in the mailbox is taken too, unless
// IMAPMailbox.SkipExisting. Mail is read with BODY.PEEK[] (no \Seen), and once spooled it
// can get a flag or keyword (IMAPMailbox.Flag) or be moved (MoveTo); nothing is deleted. That
// happens after the spool commit, not after the room has the mail, and per batch: a crash in
// between leaves a spooled mail unflagged.
//
// The poller waits with IDLE, ended and issued again every IMAPOptions.IdleRestart (25
// minutes; RFC 2177 asks for under 29), and asks a server without IDLE every PollInterval. A
// lost connection is made again with backoff. Login is LOGIN with the password, or XOAUTH2
// or OAUTHBEARER with an access token from IMAPOptions.TokenSource (Microsoft 365 and Google
// take only these), taken anew for each connection. A refused login is an error wrapping
// ErrIMAPLogin, logged and retried with backoff; no password or token is ever in a log or an
// error. On PostgreSQL one poller at a time takes a mailbox: it holds an advisory lock
// (pg_try_advisory_lock) on a connection of its own while connected, and another instance's
// poller waits and takes over when it is freed.
//
// Not done yet (issue 10): no STARTTLS, implicit TLS or AUTH; no SPF, DKIM or DMARC, so an
// allow-list checks an unauthenticated envelope sender; no per-sender rate limit; MIME depth
// and part count are capped when converting, not refused at DATA; no group commit; no threads
// from In-Reply-To and References; no inline cid: images, message/rfc822 or calendar
// rendering; automated mail is marked (Mail.Automated) but bounces are not parsed; no claiming
// of spool work by several instances on PostgreSQL; no metrics; an IMAP mail is flagged or
// moved once spooled, not once posted.
package mailbridge
