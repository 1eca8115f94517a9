package mailbridge_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestIMAPFlagMoveAfterPosted: a mailbox's mails are flagged and moved once they are in the
// room, not once they are spooled. The proxy holds the bot's sends (a slow homeserver), so the
// mails are spooled and posted to the outbox but not sent: they stay in the mailbox as they
// were. They are then sent while the poller is stopped; a poller started again flags and
// moves them. Mail appended while it runs is flagged and moved once posted.
func TestIMAPFlagMoveAfterPosted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dendrite and Dovecot")
	}
	srv := matrixtest.NewServer(t)
	proxy := newSendProxy(t, srv.URL)
	s := &imapSetup{srv: srv, imap: startDovecot(t, dovecotOptions{}), logs: &logRecorder{t: t}}
	s.bot = botVia(t, srv, proxy, "mailbot")
	officer := srv.NewClient(t, "officer")
	s.room = roomWith(t, s.bot, officer, false)
	s.inbox = matrixtest.NewRecorder(t, officer, s.room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	if err != nil {
		t.Fatal(err)
	}
	s.gw, _ = startGateway(t, mailbridge.Options{Client: s.bot, Router: router, Logger: slog.New(s.logs)})
	c := s.imap.Client(t)
	if err := c.Create("Posted", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	const flag = "samtal-posted"
	opts := s.options(mailbridge.IMAPMailbox{Name: "INBOX", Address: "cases@agency.example", Flag: flag, MoveTo: "Posted"})

	proxy.hold.Store(true)
	appendMail(t, c, "INBOX", imapMail("Held 1"))
	appendMail(t, c, "INBOX", imapMail("Held 2"))
	stop := s.run(t, opts)
	matrixtest.Eventually(t, func() error {
		u, err := s.gw.Undelivered(t.Context())
		if err != nil || len(u) != 2 || !u[0].Posted || !u[1].Posted {
			return fmt.Errorf("undelivered %+v, %v; want both mails posted", u, err)
		}
		return nil
	})
	stop() // whatever the poller did, it has done
	wantMailbox(t, c, "INBOX", 2, false, flag)

	// Sent while the poller is stopped: the mails stay as they are until it runs again.
	proxy.unhold()
	s.waitOnce(t, "Held 1", "Held 2")
	waitSpoolEmpty(t, s.gw)
	wantMailbox(t, c, "INBOX", 2, false, flag)

	s.run(t, opts)
	matrixtest.Eventually(t, func() error { return mailboxIs(c, "INBOX", 0, false, flag) })
	matrixtest.Eventually(t, func() error { return mailboxIs(c, "Posted", 2, true, flag) })

	// While the poller runs.
	appendMail(t, c, "INBOX", imapMail("Live 1"))
	s.waitOnce(t, "Live 1")
	matrixtest.Eventually(t, func() error { return mailboxIs(c, "INBOX", 0, false, flag) })
	matrixtest.Eventually(t, func() error { return mailboxIs(c, "Posted", 3, true, flag) })
	s.waitOnce(t, "Held 1", "Held 2", "Live 1")
}

// wantMailbox fails the test unless mailboxIs.
func wantMailbox(t *testing.T, c *imapclient.Client, mailbox string, n int, flagged bool, flag string) {
	t.Helper()
	if err := mailboxIs(c, mailbox, n, flagged, flag); err != nil {
		t.Fatal(err)
	}
}

// mailboxIs checks that mailbox has n mails, each with flag when flagged, none with it when not.
func mailboxIs(c *imapclient.Client, mailbox string, n int, flagged bool, flag string) error {
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return err
	}
	if int(sel.NumMessages) != n {
		return fmt.Errorf("%s has %d mails, want %d", mailbox, sel.NumMessages, n)
	}
	if n == 0 {
		return nil
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true}).Collect()
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if hasFlag(m.Flags, imap.Flag(flag)) != flagged {
			return fmt.Errorf("%s mail %d has flags %v; want %s set: %v", mailbox, m.SeqNum, m.Flags, flag, flagged)
		}
	}
	return nil
}
