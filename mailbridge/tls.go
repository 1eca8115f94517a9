package mailbridge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrNoTLSConfig is returned by ServeTLS when Options.TLSConfig is not set.
var ErrNoTLSConfig = fmt.Errorf("%w: TLSConfig (needed for implicit TLS)", ErrMissingOption)

// ServeTLS answers SMTP with implicit TLS (RFC 8314, port 465) on l: every connection starts
// with the TLS handshake, using Options.TLSConfig. It returns ErrClosed after Close, as Serve
// does. A connection over Options.MaxConnections is closed before the handshake.
func (g *Gateway) ServeTLS(ctx context.Context, l net.Listener) error {
	if g.opts.TLSConfig == nil {
		l.Close()
		return ErrNoTLSConfig
	}
	limited := &limitListener{Listener: l, max: int64(g.opts.MaxConnections), open: &g.open, m: g.opts.Metrics}
	return g.serve(ctx, tls.NewListener(limited, g.opts.TLSConfig))
}

// hardeningDefaults fills in the zero values of the smtp part's Options and checks them.
func (o *Options) hardeningDefaults() error {
	if o.TLSAddr != "" && o.TLSConfig == nil {
		return ErrNoTLSConfig
	}
	if err := o.Router.checkSenderPolicies(); err != nil {
		return err
	}
	if o.TLSConfig != nil {
		o.TLSConfig = o.TLSConfig.Clone()
		if o.TLSConfig.MinVersion < tls.VersionTLS12 {
			o.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	if o.MaxHeaderBytes <= 0 || o.MaxHeaderBytes > maxHeaderBytes {
		o.MaxHeaderBytes = maxHeaderBytes
	}
	if o.MaxMIMEDepth <= 0 {
		o.MaxMIMEDepth = 50
	}
	if o.MaxMIMEParts <= 0 {
		o.MaxMIMEParts = 1000
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = 30 * time.Second
	}
	return nil
}

// hardenServer sets what the smtp part adds to go-smtp's server: STARTTLS with TLSConfig, and
// AUTH, which the session offers only over TLS (see session.AuthMechanisms). go-smtp's own
// check is off so that AUTH without TLS gets 538 5.7.11 (RFC 4954) from the session rather
// than go-smtp's 523.
func (g *Gateway) hardenServer(s *smtp.Server) {
	s.TLSConfig = g.opts.TLSConfig
	s.AllowInsecureAuth = true
}
