package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/samtalhq/samtal/mailbridge"
)

// listenTLS listens on smtp.tls.listen for implicit TLS, or returns nil when it is not set.
func listenTLS(ctx context.Context, cfg *gatewayConfig) (net.Listener, error) {
	addr := cfg.SMTP.TLS.Listen
	if addr == "" {
		return nil, nil
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for SMTP with implicit TLS on %s: %w", addr, err)
	}
	return l, nil
}

// newPollers makes a Poller for every entry of imap:.
func newPollers(ctx context.Context, cfg *gatewayConfig, gw *mailbridge.Gateway) ([]*mailbridge.Poller, error) {
	all, err := cfg.pollerOptions(ctx)
	if err != nil {
		return nil, err
	}
	var out []*mailbridge.Poller
	for i, o := range all {
		p, err := gw.NewPoller(o)
		if err != nil {
			return nil, fmt.Errorf("%w: imap[%d]: %w", errConfig, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// serveTLS serves implicit TLS on tl (when set) and runs the pollers until bg ends or the
// gateway closes.
func (rg *runningGateway) serveTLS(ctx context.Context, tl net.Listener, pollers []*mailbridge.Poller, bg context.Context) {
	if tl != nil {
		rg.smtpsAddr = tl.Addr().String()
		rg.servedTLS = make(chan error, 1)
		go func() { rg.servedTLS <- rg.gw.ServeTLS(context.WithoutCancel(ctx), tl) }()
	}
	for _, p := range pollers {
		rg.bg.Go(func() {
			if err := p.Run(bg); err != nil && bg.Err() == nil && !errors.Is(err, mailbridge.ErrClosed) {
				rg.e.log.Error("gateway: IMAP poller stopped", "err", err)
			}
		})
	}
}

// runGatewayHashPassword runs `samtal gateway hash-password`: it reads a password from the
// first line of stdin and prints its bcrypt hash, for smtp.auth.users[].password_hash.
func runGatewayHashPassword(e *env, args []string) error {
	fs := newFlags(e, "gateway hash-password")
	setUsage(fs, "gateway hash-password < password.txt", `Reads an SMTP submitter's password from the first line of stdin and prints its bcrypt hash,
for password_hash under smtp.auth.users in the gateway's configuration. The password is not
echoed or stored.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if e.stdin == nil {
		return fmt.Errorf("%w: pipe the password into stdin", errUsage)
	}
	line, err := bufio.NewReader(io.LimitReader(e.stdin, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return fmt.Errorf("%w: no password on stdin", errUsage)
	}
	if len(pw) > 72 {
		return fmt.Errorf("%w: a password of more than 72 bytes, which bcrypt cannot take", errUsage)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, string(h))
	return nil
}
