package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// Chat is a direct chat StartChat found or made.
type Chat struct {
	Room    id.RoomID // the direct chat; "" when only an email invitation went out
	With    Match     // who the chat is with, and how the directory knows
	Created bool      // the room was made by this call
	Invited bool      // nobody was found, and an email invitation was sent instead
}

// MailInvitation sends an email to a colleague the directory does not find, inviting them to
// Matrix, through an SMTP relay.
type MailInvitation struct {
	Relay   string    // host:port of the SMTP relay
	Auth    smtp.Auth // nil for a relay that trusts the sender's network
	From    string    // envelope and header sender
	Subject string    // "" means "Invitation to chat"
	// Body is the text of the mail; {from} is replaced with the inviter's Matrix ID.
	// "" means a short default.
	Body string
}

// ChatOptions configure Chats. The zero value sends no email invitations.
type ChatOptions struct {
	Invitation *MailInvitation // nil: a not-found is returned as an error
	Logger     *slog.Logger    // nil means slog.Default()
}

// Chats starts direct chats with colleagues found by email address.
type Chats struct {
	c    *matrix.Client
	dir  *Directory
	opts ChatOptions
	log  *slog.Logger
	mu   sync.Mutex // one StartChat at a time, so that two calls do not make two rooms
}

// NewChats returns Chats that start chats as c and find people through dir.
func NewChats(c *matrix.Client, dir *Directory, opts ChatOptions) *Chats {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Chats{c: c, dir: dir, opts: opts, log: log}
}

// StartChat returns the direct chat with the owner of email: the one listed in the account's
// m.direct where both are still members, or else a new encrypted one (preset DirectChat),
// which is then added to m.direct. When nobody is found and an invitation is configured, an
// email goes out and Chat.Invited is true; otherwise the *NotFoundError is returned.
func (s *Chats) StartChat(ctx context.Context, email string) (Chat, error) {
	m, err := s.dir.Lookup(ctx, email)
	if errors.Is(err, ErrNotFound) && s.opts.Invitation != nil {
		if err := s.invite(ctx, email); err != nil {
			return Chat{}, err
		}
		return Chat{Invited: true}, nil
	}
	if err != nil {
		return Chat{}, err
	}
	if m.UserID == s.c.UserID() {
		return Chat{}, fmt.Errorf("%w: %s is this account's own address", ErrInvalidAddress, m.Address)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	direct, err := s.directRooms(ctx)
	if err != nil {
		return Chat{}, err
	}
	for _, room := range direct[m.UserID] {
		if s.usable(ctx, room, m.UserID) {
			return Chat{Room: room, With: m}, nil
		}
	}
	room, err := s.c.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.DirectChat, Invite: []id.UserID{m.UserID}})
	if err != nil {
		return Chat{}, fmt.Errorf("identity: create a direct chat with %s: %w", m.UserID, err)
	}
	direct[m.UserID] = append(direct[m.UserID], room)
	if err := s.c.Mautrix().SetAccountData(ctx, event.AccountDataDirectChats.Type, direct); err != nil {
		// The room exists: return it with the error, so that the caller can use it.
		return Chat{Room: room, With: m, Created: true}, fmt.Errorf("identity: record the direct chat %s in m.direct: %w", room, err)
	}
	s.log.Info("identity: direct chat created", "room", room, "with", m.UserID, "source", m.Source)
	return Chat{Room: room, With: m, Created: true}, nil
}

func (s *Chats) directRooms(ctx context.Context) (map[id.UserID][]id.RoomID, error) {
	direct := map[id.UserID][]id.RoomID{}
	err := s.c.Mautrix().GetAccountData(ctx, event.AccountDataDirectChats.Type, &direct)
	if err != nil && errCode(err) != "M_NOT_FOUND" {
		return nil, fmt.Errorf("identity: read m.direct: %w", err)
	}
	if direct == nil {
		direct = map[id.UserID][]id.RoomID{}
	}
	return direct, nil
}

// usable: we are joined, and they are joined or invited.
func (s *Chats) usable(ctx context.Context, room id.RoomID, with id.UserID) bool {
	var mine, theirs event.MemberEventContent
	if err := s.c.Mautrix().StateEvent(ctx, room, event.StateMember, string(s.c.UserID()), &mine); err != nil || mine.Membership != event.MembershipJoin {
		return false
	}
	if err := s.c.Mautrix().StateEvent(ctx, room, event.StateMember, string(with), &theirs); err != nil {
		return false
	}
	return theirs.Membership == event.MembershipJoin || theirs.Membership == event.MembershipInvite
}

func (s *Chats) invite(ctx context.Context, email string) error {
	inv := s.opts.Invitation
	addr, err := ParseAddress(email)
	if err != nil {
		return err
	}
	subject := inv.Subject
	if subject == "" {
		subject = "Invitation to chat"
	}
	body := inv.Body
	if body == "" {
		body = "{from} would like to chat with you on Matrix, but found no Matrix account for this address.\r\n"
	}
	body = strings.ReplaceAll(strings.ReplaceAll(body, "{from}", string(s.c.UserID())), "\n", "\r\n")
	body = strings.ReplaceAll(body, "\r\r\n", "\r\n")
	msg := "From: " + inv.From + "\r\nTo: " + addr.String() + "\r\nSubject: " + subject +
		"\r\nDate: " + time.Now().UTC().Format(time.RFC1123Z) +
		"\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
	if strings.ContainsAny(inv.From+subject, "\r\n") {
		return fmt.Errorf("identity: invitation From and Subject must be one line each")
	}
	if err := sendMail(ctx, inv, addr.String(), []byte(msg)); err != nil {
		return fmt.Errorf("%w: email invitation through %s: %w", ErrUnavailable, inv.Relay, err)
	}
	s.log.Info("identity: nobody found; email invitation sent", "relay", inv.Relay)
	return nil
}

// sendMail delivers one message through the relay, the connection bounded by ctx (net/smtp's
// SendMail has no context).
func sendMail(ctx context.Context, inv *MailInvitation, to string, msg []byte) error {
	host, _, err := net.SplitHostPort(inv.Relay)
	if err != nil {
		return err
	}
	conn, err := (&net.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, "tcp", inv.Relay)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return err
		}
	}
	if inv.Auth != nil {
		if err := c.Auth(inv.Auth); err != nil {
			return err
		}
	}
	if err := c.Mail(inv.From); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
