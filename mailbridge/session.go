package mailbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

// session is one SMTP connection. Its transaction state (sender, recipients) is cleared by
// Reset, which go-smtp calls after every DATA, on RSET and on a second EHLO, so that a reused
// connection starts each mail clean. What belongs to the connection (the client's address,
// an authenticated user) stays.
type session struct {
	g      *Gateway
	conn   *smtp.Conn
	remote string
	ip     netip.Addr
	user   string // the authenticated submitter, or ""

	authFailures int

	from     string
	hasFrom  bool
	targets  []target       // one per room, in the order of the first recipient for it
	policies []SenderPolicy // the SenderPolicy of the route of each target
	members  bool           // a target's route is MembersOnly
	// allowLists are the matches of the recipients whose route has AllowSenders, checked at
	// DATA against the senders the mail proves (allow.go).
	allowLists []Match
}

func (g *Gateway) newSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{g: g, conn: c}
	if nc := c.Conn(); nc != nil {
		s.remote = nc.RemoteAddr().String()
		if ap, err := netip.ParseAddrPort(s.remote); err == nil {
			s.ip = ap.Addr().Unmap()
		}
	}
	g.conns.add(s, c.Conn()) // ops: for Shutdown
	return s, nil
}

func (s *session) Reset() {
	s.from, s.hasFrom, s.targets, s.policies, s.members = "", false, nil, nil, false
	s.allowLists = nil
	s.g.conns.end(s) // ops: Shutdown closes the connection between transactions
}

func (s *session) Logout() error {
	s.g.conns.remove(s) // ops
	return nil
}

// replied tells Options.Metrics how a command was answered.
func (s *session) replied(err error) {
	code := 250
	if se := reply(err); se != nil {
		code = se.Code
	}
	s.g.opts.Metrics.SMTPReply(code)
}

func (s *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer func() { s.replied(err) }()
	if s.g.conns.refusing() { // ops: 421 while shutting down
		return ErrShuttingDown
	}
	s.Reset()
	s.g.conns.begin(s)
	if opts != nil && opts.Size > s.g.opts.MaxMessageBytes {
		return ErrMessageTooLarge
	}
	if !s.g.rate.allow(s.rateKey(from), time.Now()) {
		s.g.log.Info("sender refused", "remote", s.remote, "reason", "rate limit")
		return ErrRateLimited
	}
	s.from, s.hasFrom = from, true
	return nil
}

// rateKey is whose mail a mail counts against: the authenticated user, the envelope sender,
// or for bounces the client's address.
func (s *session) rateKey(from string) string {
	switch {
	case s.user != "":
		return "auth:" + s.user
	case from != "":
		return "from:" + strings.ToLower(from)
	}
	return "ip:" + s.ip.String()
}

// trustedSubmitter reports whether the mail's sender is let past allow-lists and sender
// policies: an authenticated user, with Options.TrustSubmitters.
func (s *session) trustedSubmitter() bool { return s.user != "" && s.g.opts.TrustSubmitters }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) (err error) {
	defer func() { s.replied(err) }()
	if !s.hasFrom {
		return errNoTransaction
	}
	to = s.g.router.qualifyPostmaster(to)
	m, err := s.g.match(to)
	if err != nil {
		s.g.log.Info("recipient refused", "remote", s.remote, "reason", reasonOf(err))
		return reply(err)
	}
	if len(m.Route.AllowSenders) > 0 && !m.postmaster {
		// Who sent the mail is known only after DATA: see checkAllowed. Recorded before the
		// room is deduplicated, so that the strictest list of a room's routes holds.
		s.allowLists = append(s.allowLists, m)
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
	policy := m.Route.SenderPolicy
	if m.postmaster {
		policy = SenderMark // postmaster must reach someone, forged or not
	}
	s.targets = append(s.targets, t)
	s.policies = append(s.policies, policy)
	s.members = s.members || (m.Route.MembersOnly && !m.postmaster)
	return nil
}

// match routes a recipient: the Router, with postmaster@ of every routed domain sent to
// Options.PostmasterRoom when set, and a domain that is not routed at all refused as
// relaying. A bare "RCPT TO:<Postmaster>" (RFC 5321 4.5.1) arrives here qualified, see
// Router.qualifyPostmaster.
func (g *Gateway) match(to string) (Match, error) {
	m, err := g.router.Match(to)
	if err != nil {
		if _, domain, ok := splitAddress(to); !ok || !g.routesDomain(domain) {
			return Match{}, ErrRelayDenied
		}
		return Match{}, err
	}
	if m.postmaster && g.opts.PostmasterRoom != "" {
		rt := Route{Address: m.Route.Address, Room: g.opts.PostmasterRoom}
		m.Route, m.Room = &rt, rt.Room
	}
	return m, nil
}

// routesDomain reports whether a route names the domain (every routed domain has a
// postmaster route, see NewRouter).
func (g *Gateway) routesDomain(domain string) bool {
	_, ok := g.router.postmaster[domain]
	return ok
}

func reasonOf(err error) string {
	if errors.Is(err, ErrRelayDenied) {
		return "relaying denied"
	}
	return "unknown recipient"
}

// Data reads the mail, checks its header and structure and its sender, and spools it with
// the result on top. It answers only with *smtp.SMTPError values: a plain error would become
// a permanent 554.
func (s *session) Data(r io.Reader) (err error) {
	defer func() { s.replied(err) }()
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
	g := s.g
	if headerSize(raw) > g.opts.MaxHeaderBytes {
		return ErrHeaderTooLarge
	}
	e, _ := message.ReadWithOptions(bytes.NewReader(raw), &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if e == nil || startsFolded(raw) {
		return ErrMalformed // a first line that continues nothing would continue the fields stamp adds
	}
	fields := 0
	for f := e.Header.Fields(); f.Next(); {
		fields++
	}
	if fields > g.opts.MaxHeaderFields {
		return ErrHeaderTooLarge
	}
	if err := checkMIME(raw, g.opts.MaxMIMEDepth, g.opts.MaxMIMEParts); err != nil {
		return err
	}

	env := envelope{ip: s.ip, helo: s.conn.Hostname(), from: s.from, user: s.user, trusted: g.trustedRelay(s.ip)}
	v := g.authenticate(g.ctx, env, raw, e.Header)
	err = s.applyPolicy(&v)
	g.opts.Metrics.DMARC(v.results().DMARC)
	if err != nil {
		g.log.Info("mail refused", "remote", s.remote, "reason", "sender authentication", "dmarc", v.dmarc, "from_domain", v.fromDomain)
		return err
	}
	if err := s.checkAllowed(proven(env, v, e.Header)); err != nil {
		g.log.Info("mail refused", "remote", s.remote, "reason", "sender not allowed", "dmarc", v.dmarc, "from_domain", v.fromDomain)
		return err
	}
	if err := s.checkMember(v); err != nil {
		g.log.Info("mail refused", "remote", s.remote, "reason", "not a member of the federation", "dmarc", v.dmarc, "from_domain", v.fromDomain)
		return err
	}
	class := Classify(s.from, raw)
	raw = g.stamp(raw, env, v)

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
	g.log.Info("mail accepted", "remote", s.remote, "spool_id", id, "rooms", len(s.targets), "bytes", len(raw),
		"spf", v.spf, "dmarc", v.dmarc, "automated", class.Kind.String())
	g.kickFor(s.targets)
	return nil
}

// applyPolicy decides, from the routes of the mail's recipients, whether a mail whose sender
// did not pass DMARC is refused. One route that rejects refuses the mail for all (an SMTP
// server answers DATA once, for the whole mail; the sender learns of it rather than some
// rooms silently missing it). It records in v when every route accepts by local policy.
func (s *session) applyPolicy(v *verdict) error {
	if v.dmarc == "pass" {
		return nil
	}
	if s.trustedSubmitter() {
		v.overridden = true
		return nil
	}
	accept := true
	for _, p := range s.policies {
		switch p {
		case SenderReject:
			if v.dmarc == "fail" {
				return ErrSenderForged
			}
			if v.dmarc == "temperror" {
				return ErrSenderUnverifiable
			}
			accept = false
		case SenderAccept:
		default:
			accept = false
		}
	}
	v.overridden = accept && (v.dmarc == "fail" || v.dmarc == "temperror" || v.dmarc == "permerror")
	return nil
}

// checkMember refuses the mail when a route of its recipients is MembersOnly and its From
// domain is not both authenticated (DMARC pass) and a member's (Options.Federation). An
// authenticated submitter with Options.TrustSubmitters passes, as for every sender policy.
func (s *session) checkMember(v verdict) error {
	if !s.members || s.trustedSubmitter() {
		return nil
	}
	fed := s.g.opts.Federation
	if v.dmarc != "pass" || fed == nil || !fed.HasDomain(v.fromDomain) {
		return ErrNotMember
	}
	return nil
}

// startsFolded reports whether a mail's first line starts with white space: a continuation
// of no field (RFC 5322 2.2.3), which on top of another field would become part of it.
func startsFolded(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t')
}

// trustedRelay reports whether ip is one of Options.TrustedRelays.
func (g *Gateway) trustedRelay(ip netip.Addr) bool {
	for _, p := range g.opts.TrustedRelays {
		if p.Contains(ip) {
			return true
		}
	}
	return false
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
