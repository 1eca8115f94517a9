package mailbridge_test

import (
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/samtalhq/samtal/internal/dovecottest"
)

// The IMAP tests' Dovecot is internal/dovecottest's, which cmd/samtal's tests use too.
type (
	dovecotOptions = dovecottest.Options
	dovecot        = dovecottest.Server
)

func startDovecot(t *testing.T, o dovecotOptions) *dovecot { return dovecottest.Start(t, o) }

func appendMail(t *testing.T, c *imapclient.Client, mailbox, raw string) {
	t.Helper()
	dovecottest.Append(t, c, mailbox, raw)
}

// uidValidity returns the UIDVALIDITY of a mailbox.
func uidValidity(t *testing.T, c *imapclient.Client, mailbox string) uint32 {
	t.Helper()
	s, err := c.Status(mailbox, &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return s.UIDValidity
}
