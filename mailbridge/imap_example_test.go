package mailbridge_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// A gateway that takes the mail of an agency's existing Microsoft 365 case mailbox into a
// room: the poller signs in with XOAUTH2 and a token of the app's own (client credentials),
// marks each mail it has spooled with a keyword, and waits for more with IDLE.
func ExampleGateway_NewPoller() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	db, err := matrix.OpenDatabase(ctx, "/var/lib/samtal/gateway.db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	client, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: "https://matrix.agency.example",
		Login:         matrix.Password("mail-gateway", os.Getenv("GATEWAY_PASSWORD")),
		DB:            db,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: "#cases:matrix.agency.example"})
	if err != nil {
		log.Fatal(err)
	}
	gw, err := mailbridge.New(ctx, mailbridge.Options{Client: client, Router: router})
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Close()

	tokens := &clientcredentials.Config{
		ClientID:     os.Getenv("M365_CLIENT_ID"),
		ClientSecret: os.Getenv("M365_CLIENT_SECRET"),
		TokenURL:     "https://login.microsoftonline.com/" + os.Getenv("M365_TENANT") + "/oauth2/v2.0/token",
		Scopes:       []string{"https://outlook.office365.com/.default"},
	}
	p, err := gw.NewPoller(mailbridge.IMAPOptions{
		Addr:        "outlook.office365.com:993",
		Username:    "cases@agency.example",
		TokenSource: tokens.TokenSource(ctx),
		Mailboxes:   []mailbridge.IMAPMailbox{{Name: "INBOX", Address: "cases@agency.example", Flag: "samtal-posted"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
