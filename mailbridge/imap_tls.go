package mailbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// ErrIMAPCertificate is wrapped by the error of a connection whose IMAP server's certificate
// is not trusted: signed by a CA not in IMAPOptions.TLSConfig's roots (the system's by
// default), for another host name, or expired. The wrapped error names the problem. The
// Poller logs it and tries again with backoff; an operator has to fix the roots (ca_file) or
// the server's certificate.
var ErrIMAPCertificate = errors.New("mailbridge: IMAP server's certificate is not trusted")

// tlsHandshake starts TLS on conn at once, so that a certificate problem is reported as one,
// not as a failed greeting.
func tlsHandshake(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, certificateError(fmt.Errorf("IMAP TLS handshake: %w", err))
	}
	return tc, nil
}

// certificateError wraps err with ErrIMAPCertificate when it is about the server's certificate.
func certificateError(err error) error {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return fmt.Errorf("%w: %w", ErrIMAPCertificate, err)
	}
	return err
}
