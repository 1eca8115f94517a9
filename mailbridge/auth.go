package mailbridge

import (
	"context"
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// AuthFunc checks the credentials of an SMTP submitter (AUTH PLAIN). It returns nil when they
// are right, an error wrapping ErrAuthFailed when they are wrong, and any other error when it
// cannot tell (the client is then told 454 4.7.0, try again later). It must not log the
// password.
type AuthFunc func(ctx context.Context, username, password string) error

// Replies to AUTH.
var (
	// ErrAuthFailed: the credentials are wrong (535 5.7.8).
	ErrAuthFailed = smtp.ErrAuthFailed
	// ErrEncryptionRequired: AUTH on a connection without TLS (538 5.7.11, RFC 4954); the
	// credentials were not read.
	ErrEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	// errAuthUnavailable: the credential check failed for another reason (454 4.7.0).
	errAuthUnavailable = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	// errTooManyAuthFailures: the client should close the connection (421 4.7.0); AUTH on it
	// gets nothing else.
	errTooManyAuthFailures = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications"}
)

// maxAuthFailures is how many wrong credentials one connection may try.
const maxAuthFailures = 3

// AuthMechanisms offers PLAIN, and only over TLS, so that no password crosses the network in
// the clear; without Options.Authenticate there is no AUTH.
func (s *session) AuthMechanisms() []string {
	if s.g.opts.Authenticate == nil || !s.isTLS() {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth starts an AUTH exchange.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.g.opts.Authenticate == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	if !s.isTLS() {
		return nil, ErrEncryptionRequired
	}
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	if s.authFailures >= maxAuthFailures {
		return nil, errTooManyAuthFailures // and every further try on this connection
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			s.authFailures++
			return ErrAuthFailed // acting for another identity is not offered
		}
		ctx, cancel := context.WithTimeout(s.g.ctx, s.g.opts.AuthTimeout)
		defer cancel()
		err := s.g.opts.Authenticate(ctx, username, password)
		switch {
		case err == nil:
			s.user = username
			s.g.log.Info("submitter authenticated", "remote", s.remote, "user", username)
			return nil
		case errors.Is(err, ErrAuthFailed):
			s.authFailures++
			s.g.log.Info("authentication failed", "remote", s.remote, "user", username)
			return ErrAuthFailed
		default:
			s.g.log.Warn("authentication could not be checked", "remote", s.remote, "err", err)
			return errAuthUnavailable
		}
	}), nil
}

// isTLS reports whether the connection is encrypted now (implicit TLS or after STARTTLS).
func (s *session) isTLS() bool {
	_, ok := s.conn.TLSConnectionState()
	return ok
}
