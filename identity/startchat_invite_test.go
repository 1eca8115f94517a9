package identity_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// relay is a real SMTP server (go-smtp) on loopback that keeps what it is given, as the
// agency's relay would pass it on.
type relay struct {
	mu   sync.Mutex
	rcpt []string
	data []string
}

func (r *relay) NewSession(*smtp.Conn) (smtp.Session, error) { return &relaySession{r: r}, nil }

type relaySession struct {
	r  *relay
	to []string
}

func (s *relaySession) Reset()                               { s.to = nil }
func (s *relaySession) Logout() error                        { return nil }
func (s *relaySession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.rcpt = append(s.r.rcpt, s.to...)
	s.r.data = append(s.r.data, string(b))
	s.r.mu.Unlock()
	return nil
}

// TestStartChatInvitesByEmail: nobody has the address, so StartChat sends an invitation
// through the relay instead; with the relay down, the error says so and is no not-found.
func TestStartChatInvitesByEmail(t *testing.T) {
	srv := matrixtest.NewServer(t)
	c := srv.NewClient(t, "officer")
	rl := &relay{}
	s := smtp.NewServer(rl)
	s.Domain, s.AllowInsecureAuth = "relay.agency-a.test", true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = s.Serve(l) }()
	defer s.Close()

	dir := identity.NewDirectory(identity.DirectoryOptions{}, identity.StaticDirectory{})
	chats := identity.NewChats(c, dir, identity.ChatOptions{Invitation: &identity.MailInvitation{
		Relay: l.Addr().String(), From: "matrix@agency-a.test"}})
	chat, err := chats.StartChat(t.Context(), "new.colleague@agency-a.test")
	if err != nil || !chat.Invited || chat.Room != "" {
		t.Fatalf("StartChat = %+v, %v; want an email invitation", chat, err)
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if len(rl.rcpt) != 1 || rl.rcpt[0] != "new.colleague@agency-a.test" || !strings.Contains(rl.data[0], string(c.UserID())) ||
		!strings.Contains(rl.data[0], "Auto-Submitted: auto-generated") {
		t.Fatalf("the relay got %v: %q", rl.rcpt, rl.data)
	}

	down := identity.NewChats(c, dir, identity.ChatOptions{Invitation: &identity.MailInvitation{Relay: "127.0.0.1:1", From: "matrix@agency-a.test"}})
	if _, err := down.StartChat(t.Context(), "new.colleague@agency-a.test"); !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("relay down: %v, want ErrUnavailable", err)
	}
}
