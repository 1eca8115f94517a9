package mailbridge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The IMAP crash helper is this test binary run as a gateway with an IMAP poller of its own,
// so that TestIMAPPollerKilled can kill it with SIGKILL.
const imapHelperEnv = "SAMTAL_MAILBRIDGE_IMAP_HELPER"

// TestIMAPHelper is not a test: run by TestIMAPPollerKilled, it polls until killed.
func TestIMAPHelper(t *testing.T) {
	if os.Getenv(imapHelperEnv) != "1" {
		t.Skip("run by TestIMAPPollerKilled")
	}
	g := processGateway(t, mailbridge.Options{})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := g.NewPoller(mailbridge.IMAPOptions{
		Addr: os.Getenv("IMAP_ADDR"), Security: "none", Username: os.Getenv("IMAP_USER"), Password: os.Getenv("IMAP_IMAP_PASSWORD"),
		Mailboxes:         []mailbridge.IMAPMailbox{{Address: "cases@agency.example", Flag: "samtal-posted"}},
		BatchSize:         4,
		MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Run(context.Background())
}

// TestIMAPPollerKilled: the gateway process is killed with SIGKILL at random points while its
// poller takes a mailbox's mail in batches, and started again: every mail is in the room
// exactly once.
func TestIMAPPollerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a gateway process several times")
	}
	ps := newProcessScene(t, imapHelperEnv)
	inbox := ps.inbox
	d := startDovecot(t, dovecotOptions{})
	c := d.Client(t)
	start := func() *exec.Cmd {
		t.Helper()
		return ps.start(t, "TestIMAPHelper", "IMAP_ADDR="+d.Addr, "IMAP_USER="+d.User, "IMAP_IMAP_PASSWORD="+d.Password)
	}

	var all []string
	const rounds, perRound = 6, 10
	for round := range rounds {
		for i := range perRound {
			subj := fmt.Sprintf("Killed %d-%d", round, i)
			appendMail(t, c, "INBOX", imapMail(subj))
			all = append(all, subj)
		}
		cmd := start()
		if round%2 == 0 {
			// Kill as soon as the poller has finished a batch of this round (it flags a batch
			// when it is spooled): it is then in the middle of the next one.
			want := round*perRound + 4
			matrixtest.Eventually(t, func() error {
				if n := flagged(t, c, "samtal-posted"); n < want {
					return fmt.Errorf("%d of %d mails flagged", n, want)
				}
				return nil
			})
		} else {
			// Kill once a random number of this round's mails is in the room: the delivery
			// worker is then somewhere in the spool.
			want := round*perRound + 1 + rand.IntN(perRound-2)
			matrixtest.Eventually(t, func() error {
				if n := countPrefix(inbox, "Killed "); n < want {
					return fmt.Errorf("%d of %d mails posted", n, want)
				}
				return nil
			})
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
	}
	start()
	for _, s := range all {
		inbox.Wait(t, subjectLine(s))
	}
	for _, s := range all {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%s posted %d times, want once", s, n)
		}
	}
	t.Logf("%d mails over %d kills", len(all), rounds)
}

// countPrefix counts the posted mails whose subject starts with prefix, each subject once.
func countPrefix(r *matrixtest.Recorder, prefix string) int {
	seen := map[string]bool{}
	for _, e := range r.Events() {
		for _, line := range strings.Split(e.Text(), "\n") {
			if strings.HasPrefix(line, "Subject: "+prefix) {
				seen[line] = true
			}
		}
	}
	return len(seen)
}

// flagged counts the messages in INBOX that have the keyword.
func flagged(t *testing.T, c *imapclient.Client, keyword string) int {
	t.Helper()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.Flag(keyword)}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return len(data.AllUIDs())
}
