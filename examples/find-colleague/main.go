// Find-colleague finds a colleague in any agency by email address and starts an encrypted
// direct chat with them, saying hello: the directory and StartChat of package identity.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency-a.example SAMTAL_USER=anna SAMTAL_DB=anna.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only; the session is kept in the database
//	export FIND_DOMAINS=agency-b.example=matrix.agency-b.example,agency-c.example=matrix.agency-c.example
//	export FIND_STATIC=people.csv   # optional: email,user_id lines for closed deployments
//	go run -tags goolm ./examples/find-colleague karin.lund@agency-b.example
//
// The address is looked up in the static file, then by its domain (the other agency's server,
// confirmed by a profile lookup over federation), then in the own server's user directory. It
// prints where the answer came from and the room, and says hello there; the same address
// later finds the same room.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// config is the account and where to look.
type config struct {
	Homeserver, User, Password, DB string

	Domains identity.StaticDomains // email domain -> the agency's server
	Static  string                 // optional static directory file
	Out     io.Writer              // where the result goes; nil means standard output
	Log     *slog.Logger
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: find-colleague EMAIL")
	}
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"), User: os.Getenv("SAMTAL_USER"),
		Password: os.Getenv("SAMTAL_PASSWORD"), DB: os.Getenv("SAMTAL_DB"),
		Domains: identity.StaticDomains{}, Static: os.Getenv("FIND_STATIC"),
	}
	if cfg.DB == "" {
		cfg.DB = "find-colleague.db"
	}
	for _, kv := range strings.Split(os.Getenv("FIND_DOMAINS"), ",") {
		if domain, server, ok := strings.Cut(kv, "="); ok {
			cfg.Domains[strings.ToLower(domain)] = identity.DomainRule{ServerName: server}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Args[1]); err != nil {
		if errors.Is(err, identity.ErrNotFound) {
			log.Fatalf("nobody found: %v", err)
		}
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg config, email string) error {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: cfg.Homeserver, Login: matrix.Password(cfg.User, cfg.Password), DB: db, Logger: cfg.Log})
	if err != nil {
		return err
	}
	defer c.Close()
	key, err := e2ee.LoadOrCreatePickleKey(cfg.DB + ".pickle-key")
	if err != nil {
		return err
	}
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: key})
	if err != nil {
		return err
	}
	defer m.Close()

	var resolvers []identity.Resolver
	if cfg.Static != "" {
		static, err := identity.LoadStaticDirectory(cfg.Static)
		if err != nil {
			return err
		}
		resolvers = append(resolvers, static)
	}
	resolvers = append(resolvers,
		identity.NewDomainResolver(c, cfg.Domains, identity.DomainOptions{}),
		identity.NewUserDirectory(c))
	dir := identity.NewDirectory(identity.DirectoryOptions{Logger: cfg.Log}, resolvers...)

	chat, err := identity.NewChats(c, dir, identity.ChatOptions{Logger: cfg.Log}).StartChat(ctx, email)
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "%s is %s (%s: %s)\nroom %s (new: %v)\n", email, chat.With.UserID, chat.With.Source, chat.With.Detail, chat.Room, chat.Created)
	p, err := c.Send(ctx, chat.Room, matrix.Text("Hello! I found you by your email address."), matrix.SendOptions{})
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}
