package mailbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

// session is one SMTP connection. Its transaction state (sender, recipients) is cleared by
// Reset, which go-smtp calls after every DATA and on RSET, so that a reused connection starts
// each mail clean.
type session struct {
	g      *Gateway
	remote string

	from    string
	hasFrom bool
	targets []target // one per room, in the order of the first recipient for it
}

func (g *Gateway) newSession(c *smtp.Conn) (smtp.Session, error) {
	remote := ""
	if nc := c.Conn(); nc != nil {
		remote = nc.RemoteAddr().String()
	}
	s := &session{g: g, remote: remote}
	g.conns.add(s, c.Conn()) // ops: for Shutdown
	return s, nil
}

func (s *session) Reset() {
	s.from, s.hasFrom, s.targets = "", false, nil
	s.g.conns.end(s) // ops: Shutdown closes the connection between transactions
}

func (s *session) Logout() error {
	s.g.conns.remove(s) // ops
	return nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.g.conns.refusing() { // ops: 421 while shutting down
		return ErrShuttingDown
	}
	s.Reset()
	s.g.conns.begin(s)
	if opts != nil && opts.Size > s.g.opts.MaxMessageBytes {
		return ErrMessageTooLarge
	}
	s.from, s.hasFrom = from, true
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.hasFrom {
		return errNoTransaction
	}
	m, err := s.g.router.Match(to)
	if err != nil {
		s.g.log.Info("recipient refused", "remote", s.remote, "reason", "unknown recipient")
		return reply(err)
	}
	if !m.Allows(s.from) {
		s.g.log.Info("recipient refused", "remote", s.remote, "reason", "sender not allowed")
		return ErrSenderNotAllowed
	}
	for _, t := range s.targets {
		if t.room == m.Room {
			return nil // posted once per room
		}
	}
	t := target{room: m.Room, recipient: to}
	if m.Route.Create != nil {
		spec, err := json.Marshal(m.Route.Create)
		if err != nil {
			return ErrSpoolUnavailable
		}
		t.createSpec = string(spec)
	}
	s.targets = append(s.targets, t)
	return nil
}

// Data reads the mail, checks that its header can be read, and spools it. It answers only
// with *smtp.SMTPError values: a plain error would become a permanent 554.
func (s *session) Data(r io.Reader) error {
	if !s.hasFrom || len(s.targets) == 0 {
		return errNoTransaction
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == smtp.ErrDataTooLarge.Code {
			return ErrMessageTooLarge
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			return ErrLineTooLong
		}
		return ErrSpoolUnavailable // the connection broke; the client sees nothing or tries again
	}
	if headerSize(raw) > maxHeaderBytes {
		return ErrHeaderTooLarge
	}
	e, _ := message.ReadWithOptions(bytes.NewReader(raw), &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if e == nil {
		return ErrMalformed
	}
	fields := 0
	for f := e.Header.Fields(); f.Next(); {
		fields++
	}
	if fields > s.g.opts.MaxHeaderFields {
		return ErrHeaderTooLarge
	}
	g := s.g
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrSpoolUnavailable
	}
	g.data.Add(1)
	g.mu.Unlock()
	defer g.data.Done()

	// The commit must finish even if the connection drops meanwhile: a mail half-accepted is
	// decided by the database, and what it says is what gets delivered.
	ctx := context.WithoutCancel(g.ctx)
	id, err := g.spool.store(ctx, s.from, raw, s.targets)
	if err != nil {
		g.log.Error("mail not accepted: spool cannot commit", "remote", s.remote, "err", err)
		return ErrSpoolUnavailable
	}
	g.log.Info("mail accepted", "remote", s.remote, "spool_id", id, "rooms", len(s.targets), "bytes", len(raw))
	g.kick()
	return nil
}

// headerSize is the length of the header block of a raw mail: up to the first empty line, or
// all of it.
func headerSize(raw []byte) int {
	if bytes.HasPrefix(raw, []byte("\r\n")) || bytes.HasPrefix(raw, []byte("\n")) {
		return 0
	}
	end := len(raw)
	if i := bytes.Index(raw, []byte("\n\r\n")); i >= 0 {
		end = i
	}
	if i := bytes.Index(raw, []byte("\n\n")); i >= 0 && i < end {
		end = i
	}
	return end
}
