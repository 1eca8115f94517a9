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
// sender not proven to be one on a route's allow-list 550 5.7.1 at DATA, too many recipients 452 4.5.3, a mail over
// Options.MaxMessageBytes 552 5.3.4, a header over 256 KiB or Options.MaxHeaderFields 552
// 5.3.4, a line over Options.MaxLineLength 500 5.5.2, an unreadable header 550 5.6.0, a
// connection over Options.MaxConnections 421 4.7.0, and a spool that cannot commit 451 4.3.0,
// so the sender tries again. These replies are the package's error values
// (ErrUnknownRecipient and the others), each an *smtp.SMTPError. postmaster@ is accepted for
// every routed domain, from every sender.
//
// Transport security and submission (issue 10). With Options.TLSConfig the gateway offers
// STARTTLS on Addr, and ServeTLS (or Options.TLSAddr) serves implicit TLS (RFC 8314). With
// Options.Authenticate it offers AUTH PLAIN, only over TLS: EHLO without TLS does not
// advertise it, and AUTH without TLS is refused with 538 5.7.11 before a password is sent.
// An authenticated submitter is named in the mail's Authentication-Results (auth=pass). Whether
// it may send for any route is one decision for the whole gateway: with
// Options.TrustSubmitters its mail passes every route's AllowSenders and SenderPolicy (an
// internal case system that submits for many addresses); without it, it is checked as anyone,
// its AUTH name (when it is an address) counting as a proven sender for AllowSenders.
//
// Replies. Each refusal is an *smtp.SMTPError value of this package with the code below
// (RFC 5321 reply codes, RFC 3463 enhanced codes). A 4xx reply means try again later; the
// mail is not lost, the sender keeps it.
//
//	what                                             reply       at
//	connection over MaxConnections                   421 4.7.0   connect
//	AUTH without TLS                                 538 5.7.11  AUTH (ErrEncryptionRequired)
//	AUTH with wrong credentials                      535 5.7.8   AUTH (ErrAuthFailed)
//	AUTH that the AuthFunc cannot check              454 4.7.0   AUTH
//	AUTH after 3 failures on one connection          421 4.7.0   AUTH
//	sender over Options.SenderRate                   450 4.7.1   MAIL (ErrRateLimited)
//	SIZE= over MaxMessageBytes                       552 5.3.4   MAIL (ErrMessageTooLarge)
//	recipient domain not routed (relaying)           550 5.7.1   RCPT (ErrRelayDenied)
//	mailbox not routed in a routed domain            550 5.1.1   RCPT (ErrUnknownRecipient)
//	recipients over MaxRecipients                    452 4.5.3   RCPT (ErrTooManyRecipients)
//	mail over MaxMessageBytes                        552 5.3.4   DATA (ErrMessageTooLarge)
//	line over MaxLineLength                          500 5.5.2   DATA (ErrLineTooLong)
//	header over MaxHeaderBytes or MaxHeaderFields    552 5.3.4   DATA (ErrHeaderTooLarge)
//	MIME over MaxMIMEDepth or MaxMIMEParts           552 5.3.4   DATA (ErrMIMETooComplex)
//	header that cannot be read                       550 5.6.0   DATA (ErrMalformed)
//	DMARC fail on a SenderReject route               550 5.7.1   DATA (ErrSenderForged)
//	DMARC temperror on a SenderReject route          451 4.4.3   DATA (ErrSenderUnverifiable)
//	no proven sender on the route's AllowSenders     550 5.7.1   DATA (ErrSenderNotAllowed)
//	AllowSenders lists the From, DMARC temperror     451 4.4.3   DATA (ErrSenderUnverifiable)
//	From not a verified member on a MembersOnly route 550 5.7.1  DATA (ErrNotMember)
//	spool cannot commit                              451 4.3.0   DATA (ErrSpoolUnavailable)
//
// Commands out of order and bad syntax are answered by go-smtp itself (503, 501, 502).
// postmaster@ of every routed domain is accepted from every sender and goes to
// Options.PostmasterRoom, or without it to the domain's first route; so does the bare
// "RCPT TO:<Postmaster>" of RFC 5321 4.5.1, as postmaster@ of the first route's domain
// (go-smtp from v0.26.0 passes it on; MAIL FROM:<Postmaster> stays a 501). Only
// <CR><LF>.<CR><LF> ends DATA: bare LF and bare CR look-alikes of it (SMTP smuggling) stay
// text of the mail, and mail with bare LF line ends is accepted as it is. 8-bit header text is
// accepted and shown as UTF-8, best effort. A reused connection starts each mail clean (after
// DATA, RSET or a new EHLO). PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, SIZE and
// CHUNKING are advertised.
//
// Sender authentication. Every mail is checked before it is spooled: SPF (RFC 7208,
// blitiri.com.ar/go/spf) for the client's IP and the envelope sender (the HELO name for <>),
// DKIM (RFC 6376, go-msgauth; up to 5 signatures), and DMARC (RFC 7489, go-msgauth) for the
// From domain, or its organizational domain (golang.org/x/net/publicsuffix) when the From
// domain publishes nothing: a pass needs an SPF pass or a DKIM pass whose domain is aligned
// with the From domain, relaxed (same organizational domain) or strict (same name) as the
// record says (aspf, adkim). A mail with no single From address is permerror. The result is
// written on top of the mail as an Authentication-Results header (RFC 8601) whose authserv-id
// is Options.Domain, below a Return-Path with the envelope sender; ReadAuthResults reads it
// back, and the room shows it. Authentication-Results that came with the mail are renamed
// X-Untrusted-Authentication-Results, so none can pose as the gateway's, unless the client is
// one of Options.TrustedRelays: then they are kept and the top-most one's SPF result stands
// for the gateway's own (SPF of the relay's IP would say nothing).
//
// What a route does with mail whose sender fails DMARC is its Route.SenderPolicy, whatever
// the domain's own p= asks (the header records that as reason=policy-reject and so on):
//
//	SenderMark (default)  accepted; the room shows the sender as not verified
//	SenderReject          dmarc=fail refused 550 5.7.1, dmarc=temperror 451 4.4.3
//	SenderAccept          accepted, recorded as overridden by local policy (reason=local-policy); no warning
//
// One reply answers DATA for all recipients, so when any route of a mail's recipients rejects
// it, the mail is refused for all (the sender is told; no room silently misses it), and it is
// recorded as overridden only when every route accepts. postmaster@ mail is always marked,
// never rejected. All DNS lookups go through Options.Resolver (DNSServer makes one for a given
// server); the names looked up are the SPF record's, the DKIM keys' of the mail's signatures
// and the DMARC records of its From domain, each checked to be a host name first and at most
// 12 of them per mail beside SPF's own limit of 10. Nothing else from a mail's content, no
// link and no image, is ever looked up or fetched.
//
// Automated mail and bounces. Classify tells from a spooled mail (its envelope sender and
// content, as SpooledMail and the spool keep them) whether it was sent by a program:
// Auto-Submitted other than "no" (AutoGenerated, AutoReplied), Precedence bulk or junk
// (BulkMail), List-Id or Precedence list (ListMail), an empty return path (NullSender), or a
// delivery status notification (Bounce, RFC 3464), which is read into a DSN: the reporting
// MTA, the original envelope ID and Message-ID, and per recipient the action, status and
// diagnostic. Bounces are accepted at MAIL FROM:<>; a route with AllowSenders takes one only
// when its From is proven and listed, as for any mail.
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
// and the room, so a mail sent twice is posted once; the spool marks it delivered only once
// the outbox has sent it (Client.WatchOutcomes), and a post the outbox failed for good (say a
// refusal by a homeserver still starting) is requeued and posted again (Client.Requeue).
// Failed deliveries, such as while the homeserver is down, are retried with backoff, also
// by the next Gateway after a restart, which also settles what the last run had posted. One
// that still fails Options.DeadLetterAfter after receipt waits as dead in the spool:
// Gateway.Undelivered lists what is not delivered yet, each with its State (pending, posted
// into the outbox and not sent yet, or dead), Gateway.Retry revives a dead mail and
// Gateway.Drop deletes one.
//
// Personal data kept no longer than needed. A mail delivered into all its rooms is deleted
// from the spool once Options.Retention (24 hours) has passed since its receipt; on SQLite the
// deleted content is overwritten in the file and the write-ahead log is emptied after each
// sweep. What threading needs (Message-IDs and event IDs) and the outbox's idempotency keys
// stay, so later replies find their conversation and a mail delivered again is posted once.
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
// its transaction ends. OpenSpool lets an administrator list, retry and drop dead mail without
// a Gateway. The samtal command runs all of this as a daemon: samtal gateway --config.
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
// IMAP (the poller's part). For mailboxes that exist already, a Poller takes mail from IMAP
// into the same spool, so conversion, the idempotency key and delivery are the SMTP path's:
//
//	p, _ := gw.NewPoller(mailbridge.IMAPOptions{Addr: "imap.agency.example:993", Username: "cases", Password: pw,
//		Mailboxes: []mailbridge.IMAPMailbox{{Name: "INBOX", Address: "cases@agency.example", Flag: `\Seen`}}})
//	err := p.Run(ctx) // until ctx ends or the Gateway is closed
//
// IMAPOptions is plain data for a config file, but for a TLS config and the
// oauth2.TokenSource. A mailbox with an Address routes all its mail as mail to that address
// (its route's room, template and policy); without one, by the recipients in the header
// (Delivered-To, X-Original-To, To, Cc), once per room. Each route's policy holds as over SMTP
// (see below). Mail no route takes, or over Options.MaxMessageBytes, is left in the mailbox
// untouched and logged by UID.
//
// Each mailbox has a connection of its own and a checkpoint (UIDVALIDITY and the last UID
// done) in the table samtal_mail_imap_checkpoint, written in the transaction that spools the
// mail: a poller stopped or killed at any point goes on after the last mail spooled, so it
// misses nothing and spools nothing twice. When the server's UIDVALIDITY changes (the mailbox
// was recreated or restored; seen at the latest when IDLE is issued again or the next poll),
// the poller reads the whole mailbox again; mail already posted
// is not posted again, since its idempotency key comes from the Message-ID (or the content)
// and the room. On the first start the mail already in the mailbox is taken too, unless
// IMAPMailbox.SkipExisting. Mail is read with BODY.PEEK[] (no \Seen), and once delivered into
// its rooms it can get a flag or keyword (IMAPMailbox.Flag) or be moved (MoveTo); nothing is
// deleted. What to flag or move is committed with the mail, so a poller stopped or crashed in
// between does it when it runs again.
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
// Sender allow-lists. A route's AllowSenders is checked at DATA, once sender authentication
// has run, against the senders the mail proves: the SMTP AUTH user (when it is an address),
// and the From address when its domain passes DMARC, or publishes no DMARC record and has an
// SPF pass or DKIM signature aligned with it (relaxed), or a trusted relay's top-most
// Authentication-Results says dmarc=pass for it. The envelope sender alone proves nothing. As
// for SenderPolicy, one route that refuses refuses the mail for all its recipients. With
// Options.TrustSubmitters an authenticated submitter passes every list.
//
// Mail taken from IMAP meets the same route policy as mail over SMTP: SenderPolicy,
// AllowSenders and MembersOnly. It has no SMTP session of ours, so no client IP for SPF: the
// gateway verifies DKIM itself, and takes SPF, and a dmarc=pass or aligned DKIM pass, only
// from the mailbox server's own top-most Authentication-Results (IMAPOptions.TrustAuthServID).
// Without that, mail whose domain passes DMARC only by SPF reads dmarc=fail. The Return-Path
// proves nothing. The verdict is written on top of the mail as for SMTP, and the room shows
// it (a mark route's mail is marked the same way). Where SMTP would refuse a mail (550, or 451
// when DNS could not tell), the poller spools it for that route's room as a dead letter with
// the reason (Gateway.Undelivered, `samtal gateway spool list`), counted as a dead delivery
// (Metrics.Delivery); Retry posts it. Other rooms of the same mail, whose routes take it, get
// it as usual.
//
// Known limits: the reply
// counts of Options.Metrics cover the gateway's answers to MAIL, RCPT and DATA and connections
// refused, not go-smtp's own answers to malformed commands.
package mailbridge
