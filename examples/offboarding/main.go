// Offboarding removes people who left the agency from the rooms it manages: a reconcile
// against the agency's LDAP directory once a day, and at once when the IdP deprovisions
// someone through the SCIM endpoint it pushes to.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=offboarding SAMTAL_DB=offboarding.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only; the session is kept in the database
//	export OFFBOARD_SPACE='!agency-space:agency.example'
//	export OFFBOARD_LDAP_URL=ldaps://dc1.agency.example OFFBOARD_LDAP_BASE='ou=people,dc=agency,dc=example'
//	export OFFBOARD_LDAP_BIND='cn=matrix,ou=services,dc=agency,dc=example' OFFBOARD_LDAP_PASSWORD=...
//	export OFFBOARD_SCIM_TOKEN=...   # the bearer token the IdP sends
//	go run -tags goolm ./examples/offboarding
//
// The rooms managed are the children of OFFBOARD_SPACE. Every run is written to the audit log
// in the database (see samtal audit); a run that would remove more than 10% of the members is
// refused and logged, for a person to look at with samtal offboard --dry-run. The SCIM
// endpoint listens on OFFBOARD_SCIM_ADDR (default 127.0.0.1:8089; put TLS in front of it).
package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// config is the service account, the scope, the source and the SCIM endpoint.
type config struct {
	Homeserver, User, Password, DB string

	Scope     identity.Scope
	Source    identity.Source
	Every     time.Duration // between reconciles; 0 means a day
	SCIM      net.Listener  // where the SCIM endpoint listens
	SCIMToken string
	Log       *slog.Logger
}

func main() {
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"), User: os.Getenv("SAMTAL_USER"),
		Password: os.Getenv("SAMTAL_PASSWORD"), DB: os.Getenv("SAMTAL_DB"),
		Scope:     identity.Scope{Spaces: []id.RoomID{id.RoomID(os.Getenv("OFFBOARD_SPACE"))}},
		SCIMToken: os.Getenv("OFFBOARD_SCIM_TOKEN"),
		Source: &identity.LDAPSource{
			URL: os.Getenv("OFFBOARD_LDAP_URL"), BaseDN: os.Getenv("OFFBOARD_LDAP_BASE"),
			BindDN: os.Getenv("OFFBOARD_LDAP_BIND"), BindPassword: os.Getenv("OFFBOARD_LDAP_PASSWORD"),
			// Active Directory: an account is active unless disabled.
			ActiveFilter: "(!(userAccountControl:1.2.840.113556.1.4.803:=2))", UserAttr: "sAMAccountName",
		},
	}
	if cfg.DB == "" {
		cfg.DB = "offboarding.db"
	}
	addr := os.Getenv("OFFBOARD_SCIM_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8089"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	cfg.SCIM = l
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// run reconciles now and then every cfg.Every, and serves SCIM, until ctx ends. reconciled,
// if not nil, is told after each reconcile.
func run(ctx context.Context, cfg config, reconciled func(*identity.Plan, error)) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Every <= 0 {
		cfg.Every = 24 * time.Hour
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: cfg.Homeserver, Login: matrix.Password(cfg.User, cfg.Password), DB: db, Logger: log})
	if err != nil {
		return err
	}
	defer c.Close()
	if ls, ok := cfg.Source.(*identity.LDAPSource); ok && ls.ServerName == "" {
		ls.ServerName = c.UserID().Homeserver()
	}
	audit, err := identity.OpenAuditLog(ctx, db)
	if err != nil {
		return err
	}
	rec := identity.NewReconciler(c, cfg.Source, cfg.Scope, audit, identity.ReconcileOptions{Logger: log})

	// The provisioned users are kept in the database: a restart forgets none.
	scim, err := identity.NewSCIM(identity.SCIMOptions{Token: cfg.SCIMToken, ServerName: c.UserID().Homeserver(), Logger: log, DB: db,
		OnDeprovision: func(ctx context.Context, u id.UserID, reason string) error {
			_, err := rec.Offboard(ctx, u, reason)
			return err
		}})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: scim, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(cfg.SCIM) }()
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		<-served
	}()

	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	for {
		plan, err := rec.Run(ctx)
		switch {
		case errors.Is(err, identity.ErrSafetyLimit):
			log.Error("offboarding refused: over the safety limit; look at it with samtal offboard --dry-run", "err", err)
		case err != nil:
			log.Error("offboarding run failed; nothing was removed where the source could not be read", "err", err)
		default:
			log.Info("offboarding run done", "actions", len(plan.Actions))
		}
		if reconciled != nil {
			reconciled(plan, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-served:
			return err
		case <-tick.C:
		}
	}
}
