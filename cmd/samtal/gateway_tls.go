package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// certFiles is the gateway's TLS certificate, read from its files and read again when either
// changes (a renewal by certbot or an operator), checked at most once a second on a handshake.
// A renewal that cannot be read (half written, key and certificate not matching) is logged and
// the certificate in use is kept.
type certFiles struct {
	certPath, keyPath string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string    // the files' sizes and times when cert was read
	checked time.Time // the last look at the files
}

// newCertFiles reads the certificate and its key; an error names the file.
func newCertFiles(certPath, keyPath string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{certPath: certPath, keyPath: keyPath, log: log}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s, key_file %s: %w", certPath, keyPath, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

// fileStamp says when and how the files last changed.
func (c *certFiles) fileStamp() (string, error) {
	var stamp string
	for _, f := range []struct{ key, path string }{{"cert_file", c.certPath}, {"key_file", c.keyPath}} {
		s, err := fileStamp(f.path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f.key, err)
		}
		stamp += s + ";"
	}
	return stamp, nil
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < time.Second {
		return c.cert, nil
	}
	c.checked = time.Now()
	stamp, err := c.fileStamp()
	if err != nil || stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		c.log.Warn("gateway: TLS certificate changed but cannot be used; keeping the one in use", "cert_file", c.certPath, "err", err)
		return c.cert, nil
	}
	c.cert, c.stamp = &cert, stamp
	c.log.Info("gateway: TLS certificate reloaded", "cert_file", c.certPath)
	return c.cert, nil
}
