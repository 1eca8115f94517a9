package mailbridge_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// A gateway for an agency's case mailbox: mail to cases@ goes into one room, mail to
// case-4711@ into the case's own room, created on the first mail.
func ExampleNew() {
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

	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "cases@agency.example", Room: "#cases:matrix.agency.example"},
		mailbridge.Route{Address: "case-{id}@cases.agency.example", Room: "#case-{id}:matrix.agency.example",
			Create: &matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: "from mail"}},
		mailbridge.Route{Address: "postmaster@cases.agency.example", Room: "#cases:matrix.agency.example"},
	)
	if err != nil {
		log.Fatal(err)
	}
	gw, err := mailbridge.New(ctx, mailbridge.Options{Client: client, Router: router, Addr: ":2525"})
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Close()
	if err := gw.ListenAndServe(ctx); !errors.Is(err, mailbridge.ErrClosed) {
		log.Fatal(err)
	}
}
