// Mail-gateway embeds samtal's email gateway in a program of its own: mail sent to one address
// is posted into one room, through a durable spool and the client's outbox, so that nothing is
// lost while the homeserver is down and nothing is posted twice.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=mailbot SAMTAL_DB=mailbot.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only; the session is kept in the database
//	export MAIL_ADDRESS=registry@agency.example MAIL_ROOM='!roomid:agency.example' MAIL_LISTEN=127.0.0.1:2525
//	go run -tags goolm ./examples/mail-gateway
//
// The account must be invited to MAIL_ROOM, or in it; it joins at start. The room is not encrypted here: a gateway for encrypted rooms enables
// package e2ee on its client first, as e2ee-bot does. SIGTERM or Ctrl-C stops it gracefully:
// transactions under way are finished, the rest of the senders are told to come back later.
// For a gateway configured from a file, with metrics, use 'samtal gateway --config'.
package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// config is what the gateway needs: its account, the address and the room.
type config struct {
	Homeserver, User, Password, DB string
	Address, Room, Listen          string

	Log      *slog.Logger      // nil means slog.Default()
	OnListen func(addr string) // called with the SMTP address once it listens; for tests
}

func main() {
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"),
		User:       os.Getenv("SAMTAL_USER"),
		Password:   os.Getenv("SAMTAL_PASSWORD"),
		DB:         os.Getenv("SAMTAL_DB"),
		Address:    os.Getenv("MAIL_ADDRESS"),
		Room:       os.Getenv("MAIL_ROOM"),
		Listen:     os.Getenv("MAIL_LISTEN"),
	}
	if cfg.DB == "" {
		cfg.DB = "mail-gateway.db"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// run serves the gateway until ctx ends, then shuts it down gracefully.
func run(ctx context.Context, cfg config) error {
	if cfg.Address == "" || cfg.Room == "" {
		return errors.New("set MAIL_ADDRESS and MAIL_ROOM: the mail for the address goes into the room")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:2525"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	var login matrix.Login
	if cfg.Password != "" {
		login = matrix.Password(cfg.User, cfg.Password)
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: cfg.Homeserver, Login: login, DB: db, Logger: cfg.Log})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Join(ctx, cfg.Room); err != nil {
		return err
	}

	router, err := mailbridge.NewRouter(mailbridge.Route{Address: cfg.Address, Room: cfg.Room})
	if err != nil {
		return err
	}
	gw, err := mailbridge.New(ctx, mailbridge.Options{Client: c, Router: router, Logger: cfg.Log}) // the spool lives in db
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = gw.Close()
		return err
	}
	if cfg.OnListen != nil {
		cfg.OnListen(l.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(context.WithoutCancel(ctx), l) }() // stopped by Shutdown below
	cfg.Log.Info("mail-gateway is running", "smtp", l.Addr().String(), "address", cfg.Address, "room", cfg.Room)

	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = gw.Shutdown(shutdown) // finishes the SMTP transactions under way
	if serr := <-served; !errors.Is(serr, mailbridge.ErrClosed) && err == nil {
		err = serr
	}
	return err
}
