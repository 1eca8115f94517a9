package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/homeserver"
	"github.com/samtalhq/samtal/matrix"
)

// devMailDomain is the mail domain of the development gateway's demo route.
const devMailDomain = "samtal.localhost"

// devGateway is the mail gateway `samtal dev` runs beside its homeserver.
type devGateway struct {
	rg      *runningGateway
	room    id.RoomID
	address string // the demo route's address
	swaks   string // a command line that mails the room
	close   func()
}

// startDevGateway runs the mail gateway on SQLite in dir, as the user mailbot, with a demo
// route from user@samtal.localhost into a room user is in (created on the first run and
// remembered in dir).
func startDevGateway(ctx context.Context, e *env, hs *homeserver.Homeserver, dir, user, userPassword string, smtpPort int, dnsServer string) (*devGateway, error) {
	botPassword, err := demoUser(ctx, hs, dir, "mailbot")
	if err != nil {
		return nil, err
	}
	a := &account{homeserver: hs.URL(), db: filepath.Join(dir, "gateway", "gateway.db"), session: "mailbot", noE2EE: true}
	c, done, err := a.openWith(ctx, e, matrix.Password("mailbot", botPassword), "")
	if err != nil {
		return nil, fmt.Errorf("mail gateway: log in as mailbot: %w", err)
	}
	room, err := devMailRoom(ctx, c, hs, dir, user, userPassword)
	if err != nil {
		done()
		return nil, err
	}
	address := user + "@" + devMailDomain
	cfg := &gatewayConfig{Database: a.db, Routes: []routeConfig{{Address: address, Room: string(room)}}}
	cfg.SMTP.Listen = fmt.Sprintf("127.0.0.1:%d", smtpPort)
	cfg.SMTP.Domain = "mx." + devMailDomain
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.DNS.Server = dnsServer
	rg, err := startGateway(ctx, e, cfg, c)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		// Another gateway has the port: take a free one; the swaks line names it.
		e.log.Warn("SMTP port in use; the mail gateway listens on a free port instead", "port", smtpPort)
		cfg.SMTP.Listen = "127.0.0.1:0"
		rg, err = startGateway(ctx, e, cfg, c)
	}
	if err != nil {
		done()
		return nil, err
	}
	host, port, _ := strings.Cut(rg.smtpAddr, ":")
	return &devGateway{rg: rg, room: room, address: address,
		swaks: devSwaksLine(host, port, address),
		close: func() {
			if err := rg.stop(); err != nil {
				e.log.Error("stop mail gateway", "err", err)
			}
			done()
		}}, nil
}

// devMailRoom returns the demo room of the mail gateway: made by c, with user in it. It is
// made on the first run and its ID kept in dir.
func devMailRoom(ctx context.Context, c *matrix.Client, hs *homeserver.Homeserver, dir, user, userPassword string) (id.RoomID, error) {
	file := filepath.Join(dir, "gateway", "room")
	if b, err := os.ReadFile(file); err == nil {
		return id.RoomID(strings.TrimSpace(string(b))), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	userID := id.NewUserID(user, hs.ServerName())
	room, err := c.CreateRoom(ctx, matrix.RoomSpec{Name: "Mail", Topic: "Mail to " + user + "@" + devMailDomain + " arrives here", Invite: []id.UserID{userID}, Encrypted: new(bool)})
	if err != nil {
		return "", fmt.Errorf("mail gateway: create the demo room: %w", err)
	}
	// The demo user accepts the invitation, with a login of its own that ends right after.
	mx, err := mautrix.NewClient(hs.URL(), "", "")
	if err != nil {
		return "", err
	}
	if _, err := mx.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: userPassword, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, InitialDeviceDisplayName: "samtal dev (joins the mail room)"}); err != nil {
		return "", fmt.Errorf("mail gateway: %s joins the demo room: %w", user, err)
	}
	defer func() { _, _ = mx.Logout(context.WithoutCancel(ctx)) }()
	if _, err := mx.JoinRoomByID(ctx, room); err != nil {
		return "", fmt.Errorf("mail gateway: %s joins the demo room: %w", user, err)
	}
	if err := os.WriteFile(file, []byte(string(room)+"\n"), 0o600); err != nil {
		return "", err
	}
	return room, nil
}

// devSwaksLine is the command line `samtal dev` prints to mail its demo room; README.md shows
// it for the default port.
func devSwaksLine(host, port, address string) string {
	return fmt.Sprintf(`swaks --server %s --port %s --to %s --from case-system@example.org --header 'Subject: Case 4711' --body 'Decision made: approved'`, host, port, address)
}
