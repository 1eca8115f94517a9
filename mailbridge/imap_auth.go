package mailbridge

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"golang.org/x/oauth2"
)

// The SASL mechanisms for an OAuth 2.0 token.
const (
	mechXOAuth2     = "XOAUTH2"     // Google's and Microsoft's, not in an RFC
	mechOAuthBearer = "OAUTHBEARER" // RFC 7628
)

// login authenticates c with a token from the TokenSource, or with the password. Every
// refusal wraps ErrIMAPLogin; none carries the secret.
func (p *Poller) login(c *imapclient.Client) error {
	if p.opts.TokenSource == nil {
		if c.Caps().Has(imap.CapLoginDisabled) {
			return fmt.Errorf("%w: the server takes no password on this connection (LOGINDISABLED); use TLS", ErrIMAPLogin)
		}
		return loginError(c.Login(p.opts.Username, p.opts.Password).Wait(), "LOGIN", p.opts.Username)
	}
	tok, err := p.opts.TokenSource.Token()
	if err != nil {
		return fmt.Errorf("%w: no OAuth token for %s: %s", ErrIMAPLogin, p.opts.Username, tokenFailure(err))
	}
	var client sasl.Client
	if p.opts.Mechanism == mechOAuthBearer {
		client = sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: p.opts.Username, Token: tok.AccessToken})
	} else {
		client = &xoauth2Client{user: p.opts.Username, token: tok.AccessToken}
	}
	return loginError(c.Authenticate(client), p.opts.Mechanism, p.opts.Username)
}

// loginError turns the server's refusal into an error wrapping ErrIMAPLogin; other errors (a
// broken connection) stay what they are.
func loginError(err error, mech, user string) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	var be *sasl.OAuthBearerError
	switch {
	case errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo:
		return fmt.Errorf("%w: %s as %s: %s", ErrIMAPLogin, mech, user, ie.Text)
	case errors.As(err, &be):
		return fmt.Errorf("%w: %s as %s: token refused (status %s)", ErrIMAPLogin, mech, user, be.Status)
	}
	return fmt.Errorf("IMAP %s as %s: %w", mech, user, err)
}

// tokenFailure says why a token source gave no token without repeating the token endpoint's
// whole answer, which may echo what was sent.
func tokenFailure(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return "the token endpoint answered " + re.ErrorCode
		}
		if re.Response != nil {
			return "the token endpoint answered " + re.Response.Status
		}
	}
	return "the token source failed"
}

// xoauth2Client is the XOAUTH2 SASL mechanism (Google's and Microsoft's documentation): one
// initial response of "user=", the user, "\x01auth=Bearer ", the token and "\x01\x01". A
// server that refuses the token sends a JSON error as a challenge (and would take an empty
// response before it answers NO; the IMAP client cannot send one, so the exchange ends here
// and the connection is dropped).
type xoauth2Client struct {
	user, token string
}

func (x *xoauth2Client) Start() (string, []byte, error) {
	return mechXOAuth2, []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

func (x *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	var refusal struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(challenge, &refusal)
	return nil, &sasl.OAuthBearerError{Status: refusal.Status}
}
