package mailbridge

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// TestNewPollerInvalid: options that cannot work are refused with ErrInvalidIMAPOptions
// before any connection is made.
func TestNewPollerInvalid(t *testing.T) {
	router, err := NewRouter(Route{Address: "cases@agency.example", Room: "!cases:hs"})
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{router: router, log: slog.Default()}
	good := func() IMAPOptions {
		return IMAPOptions{Addr: "imap.agency.example:993", Username: "cases", Password: "pw",
			Mailboxes: []IMAPMailbox{{Address: "cases@agency.example"}}}
	}
	if _, err := g.NewPoller(good()); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*IMAPOptions)
	}{
		{"no port", func(o *IMAPOptions) { o.Addr = "imap.agency.example" }},
		{"no user", func(o *IMAPOptions) { o.Username = "" }},
		{"no credential", func(o *IMAPOptions) { o.Password = "" }},
		{"unknown security", func(o *IMAPOptions) { o.Security = "ssl3" }},
		{"plain text to a remote server", func(o *IMAPOptions) { o.Security = "none" }},
		{"unknown mechanism", func(o *IMAPOptions) {
			o.TokenSource, o.Mechanism = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}), "CRAM-MD5"
		}},
		{"no mailbox", func(o *IMAPOptions) { o.Mailboxes = nil }},
		{"mailbox twice", func(o *IMAPOptions) { o.Mailboxes = append(o.Mailboxes, IMAPMailbox{Name: "INBOX"}) }},
		{"address without route", func(o *IMAPOptions) { o.Mailboxes[0].Address = "other@agency.example" }},
		{"move into itself", func(o *IMAPOptions) { o.Mailboxes[0].MoveTo = "INBOX" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			tc.change(&o)
			if _, err := g.NewPoller(o); !errors.Is(err, ErrInvalidIMAPOptions) {
				t.Errorf("NewPoller = %v, want ErrInvalidIMAPOptions", err)
			}
		})
	}
	o := good()
	o.Addr, o.Security = "127.0.0.1:143", "none"
	if _, err := g.NewPoller(o); err != nil {
		t.Errorf("plain text on loopback: %v", err)
	}
}

// TestXOAuth2: the initial response is exactly the format Google and Microsoft document, and a
// refusal (the server's JSON challenge) is an error with its status, not a second try.
func TestXOAuth2(t *testing.T) {
	c := &xoauth2Client{user: "cases@agency.example", token: "ya29.token"}
	mech, ir, err := c.Start()
	if err != nil || mech != "XOAUTH2" || string(ir) != "user=cases@agency.example\x01auth=Bearer ya29.token\x01\x01" {
		t.Errorf("Start = %q, %q, %v", mech, ir, err)
	}
	_, err = c.Next([]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`))
	if err == nil || loginError(err, "XOAUTH2", "cases") == nil || !errors.Is(loginError(err, "XOAUTH2", "cases"), ErrIMAPLogin) {
		t.Errorf("Next after a refusal = %v, want an error that becomes ErrIMAPLogin", err)
	}
}

// TestTokenFailure: why a token source failed is said by the endpoint's error code, never by
// the endpoint's whole answer, which may echo a secret.
func TestTokenFailure(t *testing.T) {
	err := &oauth2.RetrieveError{ErrorCode: "invalid_grant", Body: []byte(`{"error":"invalid_grant","refresh_token":"rt-secret"}`)}
	got := tokenFailure(fmt.Errorf("oauth2: %w", err))
	if !strings.Contains(got, "invalid_grant") || strings.Contains(got, "rt-secret") {
		t.Errorf("tokenFailure = %q", got)
	}
	if got := tokenFailure(errors.New("dial tcp: secret-host-token")); strings.Contains(got, "secret") {
		t.Errorf("tokenFailure = %q", got)
	}
}
