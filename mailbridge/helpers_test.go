package mailbridge_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// startGateway starts a gateway for bot on a free loopback port and returns its address. It
// is closed when the test ends.
func startGateway(t *testing.T, opts mailbridge.Options) (*mailbridge.Gateway, string) {
	t.Helper()
	if opts.MinRetryDelay == 0 {
		opts.MinRetryDelay = 50 * time.Millisecond
	}
	if opts.MaxRetryDelay == 0 {
		opts.MaxRetryDelay = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = logtest.Verbose(t, slog.LevelInfo)
	}
	opts.Domain = "mx.test"
	if opts.Resolver == nil {
		// Never the machine's resolver: an empty zone of the test's own (dns_test.go).
		opts.Resolver = mailbridge.DNSServer(startDNS(t).Addr)
	}
	g, err := mailbridge.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(t.Context(), l) }()
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; !errors.Is(err, mailbridge.ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	return g, l.Addr().String()
}

// dial opens an SMTP connection to addr with go-smtp's client and says EHLO.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// send sends one mail over c and returns the server's answer to the end of DATA (nil for 250)
// or the first refusal.
func send(c *smtp.Client, from string, to []string, raw string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, raw); err != nil {
		return err
	}
	return w.Close()
}

// wantCode fails the test unless err is an *smtp.SMTPError with code and enhanced code.
func wantCode(t *testing.T, what string, err error, code int, enhanced smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enhanced {
		t.Fatalf("%s: got %v, want %d %d.%d.%d", what, err, code, enhanced[0], enhanced[1], enhanced[2])
	}
}

// mail is a small RFC 5322 message.
func mail(from, subject, messageID, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: cases@agency.example\r\nSubject: %s\r\n", from, subject)
	if messageID != "" {
		fmt.Fprintf(&b, "Message-ID: <%s>\r\n", messageID)
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
	return b.String()
}

// swaks runs the swaks SMTP client from Debian and returns its output.
func swaks(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("swaks")
	if err != nil {
		t.Fatal("swaks is not installed: run the tests through scripts/test.sh, which installs it (apt-get install swaks)")
	}
	out, err := exec.CommandContext(t.Context(), path, args...).CombinedOutput()
	return string(out), err
}

// roomWith makes a room of bot's that reader has joined, encrypted or not.
func roomWith(t *testing.T, bot, reader *matrix.Client, encrypted bool) id.RoomID {
	t.Helper()
	room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Invite: []id.UserID{reader.UserID()}, Encrypted: &encrypted})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Join(t.Context(), string(room)); err != nil {
		t.Fatal(err)
	}
	return room
}

// subjectLine matches a mail's message by the header line the gateway writes.
func subjectLine(subject string) func(*matrix.Event) bool {
	return func(e *matrix.Event) bool { return strings.Contains(e.Text(), "Subject: "+subject+"\n") }
}

// count returns how many recorded events match.
func count(r *matrixtest.Recorder, match func(*matrix.Event) bool) int {
	n := 0
	for _, e := range r.Events() {
		if match(e) {
			n++
		}
	}
	return n
}

func message(e *matrix.Event) *event.MessageEventContent { return e.Content.AsMessage() }

// openDB opens a database of the test's own, closed when the test ends.
func openDB(t *testing.T, name string) *dbutil.Database {
	t.Helper()
	db, err := matrix.OpenDatabase(t.Context(), t.TempDir()+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// lastSpooledRaw returns the mail spooled last in db (the gateway's Options.DB), as stored.
func lastSpooledRaw(t *testing.T, db *dbutil.Database) string {
	t.Helper()
	var raw []byte
	if err := db.QueryRow(t.Context(), `SELECT message FROM samtal_mail_spool ORDER BY id DESC LIMIT 1`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
