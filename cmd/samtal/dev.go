package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/samtalhq/samtal/internal/homeserver"
)

// runDev runs a development homeserver until interrupted, with its data kept in a folder so
// that a second run continues where the first stopped.
func runDev(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "dev")
	dir := fs.String("dir", ".samtal-dev", "folder for the homeserver's data (kept between runs)")
	port := fs.Int("port", 8008, "client API port on loopback")
	user := fs.String("user", "demo", "demo user to create")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *port <= 0 || *port > 65535 {
		return fmt.Errorf("%w: -port %d is not a TCP port", errUsage, *port)
	}

	hsDir := filepath.Join(*dir, "homeserver")
	e.log.Info("starting development homeserver", "dir", hsDir, "port", *port)
	hs, err := homeserver.Start(ctx, homeserver.Options{
		Dir:  hsDir,
		Port: *port,
		Logf: func(format string, args ...any) { e.log.Info(fmt.Sprintf(format, args...)) },
	})
	if errors.Is(err, homeserver.ErrPortInUse) {
		return fmt.Errorf("port %d is in use; stop what uses it or pass -port: %w", *port, err)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := hs.Stop(); err != nil {
			e.log.Error("stop homeserver", "err", err)
		}
	}()

	password, err := demoUser(ctx, hs, *dir, *user)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `samtal development homeserver is running.

  homeserver  %s
  server name %s
  user        @%s:%s
  password    %s
  data        %s
  log         %s

Log in with any Matrix client (Element: "Edit" the homeserver, enter the URL above),
or with mautrix from Go. Stop with Ctrl-C; the data stays for the next run.
`, hs.URL(), hs.ServerName(), *user, hs.ServerName(), password, hsDir, filepath.Join(hsDir, "dendrite.log"))

	<-ctx.Done()
	e.log.Info("stopping development homeserver")
	return nil
}

// demoUser registers the demo user on the first run and remembers its password (0600) in dir
// for later runs.
func demoUser(ctx context.Context, hs *homeserver.Homeserver, dir, localpart string) (string, error) {
	pwFile := filepath.Join(dir, localpart+".password")
	if b, err := os.ReadFile(pwFile); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 12)
	_, _ = rand.Read(buf)
	password := hex.EncodeToString(buf)
	if _, err := hs.Register(ctx, localpart, password, false); err != nil {
		return "", fmt.Errorf("create demo user %s: %w", localpart, err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("remember demo user's password: %w", err)
	}
	return password, nil
}
