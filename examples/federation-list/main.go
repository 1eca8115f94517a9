// Federation-list plays both sides of the agencies' federation list: the coordinating body,
// which signs the list with a key kept in a file and publishes it over HTTP, and an agency's
// samtal, which loads the list with the public key and creates a case room that only the
// members' servers may take part in.
//
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_USER=casebot SAMTAL_DB=casebot.db
//	export SAMTAL_PASSWORD=...   # needed for the first run only
//	go run -tags goolm ./examples/federation-list -key list.key -members members.json -case 4711
//
// members.json holds the members, as in the list document:
//
//	[{"name": "Agency A", "org_number": "202100-0001", "servers": ["matrix.a.example"],
//	  "email_domains": ["a.example"], "contact": "ops@a.example"}]
//
// The signing key is created in -key (owner-only) on the first run, its public half beside it
// (-key + ".pub"). The program prints the list's URL, the new room's ID and its ACL. In real
// life the list is published once and read by every agency's samtal with federation.Watcher
// (see the federation package); here both happen in one process.
package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/matrix"
)

// config is what the program needs.
type config struct {
	Homeserver, User, Password, DB string

	KeyFile string              // the signing key (PKCS #8 PEM); created when missing
	Members []federation.Member // the list's members
	Version uint64              // the list's version
	Listen  string              // where the list is published; "" means a free loopback port
	CaseID  string

	Out io.Writer
	Log *slog.Logger
}

func main() {
	cfg := config{
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"),
		User:       os.Getenv("SAMTAL_USER"),
		Password:   os.Getenv("SAMTAL_PASSWORD"),
		DB:         os.Getenv("SAMTAL_DB"),
		Out:        os.Stdout,
	}
	flag.StringVar(&cfg.KeyFile, "key", "federation-list.key", "the list's signing key (created if missing)")
	members := flag.String("members", "members.json", "JSON file with the members")
	flag.Uint64Var(&cfg.Version, "version", uint64(time.Now().Unix()), "the list's version (default: now, so it goes up)")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "where to publish the list")
	flag.StringVar(&cfg.CaseID, "case", "4711", "the case the room is about")
	flag.Parse()
	raw, err := os.ReadFile(*members)
	if err != nil {
		log.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cfg.Members); err != nil {
		log.Fatalf("%s: %v", *members, err)
	}
	if cfg.DB == "" {
		cfg.DB = "federation-list.db"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg config) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	// The coordinating body: sign the list and publish it.
	signer, pubPEM, err := signingKey(cfg.KeyFile)
	if err != nil {
		return err
	}
	now := time.Now()
	signed, err := federation.Sign(federation.Document{
		Version: cfg.Version, IssuedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), Members: cfg.Members,
	}, signer)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jose")
		_, _ = w.Write(signed)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	listURL := "http://" + ln.Addr().String() + "/federation.jws"
	fmt.Fprintln(cfg.Out, "list:", listURL)

	// An agency's samtal: load the list with the public key, and use it for case rooms.
	key, err := federation.ParsePublicKey(pubPEM)
	if err != nil {
		return err
	}
	list, err := federation.NewWatcher(listURL, key, federation.Options{Logger: cfg.Log, CacheFile: cfg.DB + ".federation.jws"})
	if err != nil {
		return err
	}
	if err := list.Refresh(ctx); err != nil {
		return err
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	client, err := matrix.New(ctx, matrix.Options{
		HomeserverURL: cfg.Homeserver,
		Login:         matrix.Password(cfg.User, cfg.Password),
		DB:            db,
		Logger:        cfg.Log,
		CaseRoomACL:   list, // every new case room: members' servers only
	})
	if err != nil {
		return err
	}
	defer client.Close()
	room, err := client.CreateRoom(ctx, matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: cfg.CaseID, Name: "Case " + cfg.CaseID})
	if err != nil {
		return err
	}
	acl, err := client.ServerACL(ctx, room)
	if err != nil {
		return err
	}
	fmt.Fprintln(cfg.Out, "room:", room)
	fmt.Fprintln(cfg.Out, "allowed servers:", acl.Allow)
	return nil
}

// signingKey reads the private key from path, creating it (and path + ".pub") if missing.
func signingKey(path string) (crypto.Signer, []byte, error) {
	privPEM, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var pubPEM []byte
		if privPEM, pubPEM, err = federation.GenerateKey(); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(path, privPEM, 0o600); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(path+".pub", pubPEM, 0o644); err != nil {
			return nil, nil, err
		}
	} else if err != nil {
		return nil, nil, err
	}
	signer, err := federation.ParsePrivateKey(privPEM)
	if err != nil {
		return nil, nil, err
	}
	pubPEM, err := os.ReadFile(path + ".pub")
	if err != nil {
		return nil, nil, fmt.Errorf("the public key beside the signing key: %w", err)
	}
	return signer, pubPEM, nil
}
