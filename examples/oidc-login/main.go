// Oidc-login is a small web application that signs an officer in with the agency's identity
// provider and posts into a room as that officer.
//
//	export OIDC_ISSUER=https://idp.agency.example OIDC_CLIENT_ID=case-web OIDC_CLIENT_SECRET=...
//	export SAMTAL_HOMESERVER=https://matrix.agency.example SAMTAL_SERVER_NAME=agency.example
//	export SAMTAL_AS_TOKEN=... SAMTAL_ROOM='!room:agency.example' SAMTAL_DB=oidc-login.db
//	go run -tags goolm ./examples/oidc-login -listen 127.0.0.1:8080 -base http://127.0.0.1:8080
//
// /login sends the officer to the provider; /callback verifies the ID token and maps the
// claims to a Matrix ID as Tchap does (jane.smith@agency.example becomes
// @jane.smith-agency.example). The application is an appservice of the homeserver with the
// officers' IDs in its namespace, so it can act as the officer it signed in
// (m.login.application_service); each officer's session is stored in the database under their
// localpart. A POST to /post with a "message" sends it into SAMTAL_ROOM as the officer.
//
// The officer's own session cookie is a random ID kept in memory; the provider's tokens stay
// on the server.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"html"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// config is what the application needs.
type config struct {
	Issuer, ClientID, ClientSecret string // the agency's OpenID provider and this client at it
	BaseURL                        string // where the application is reached, for /callback
	Homeserver, ServerName         string
	ASToken                        string // the appservice's as_token
	Room                           id.RoomID
	DB                             string
	CookieKey                      []byte
	Log                            *slog.Logger
}

func main() {
	cfg := config{
		Issuer: os.Getenv("OIDC_ISSUER"), ClientID: os.Getenv("OIDC_CLIENT_ID"), ClientSecret: os.Getenv("OIDC_CLIENT_SECRET"),
		Homeserver: os.Getenv("SAMTAL_HOMESERVER"), ServerName: os.Getenv("SAMTAL_SERVER_NAME"),
		ASToken: os.Getenv("SAMTAL_AS_TOKEN"), Room: id.RoomID(os.Getenv("SAMTAL_ROOM")), DB: os.Getenv("SAMTAL_DB"),
	}
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.BaseURL, "base", "http://127.0.0.1:8080", "the application's URL as the browser sees it")
	flag.Parse()
	if cfg.DB == "" {
		cfg.DB = "oidc-login.db"
	}
	cfg.CookieKey = make([]byte, 32)
	_, _ = rand.Read(cfg.CookieKey) // a restart ends sign-ins under way, nothing else
	ctx := context.Background()
	a, err := newApp(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	srv := &http.Server{Addr: *listen, Handler: a, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// app is the web application.
type app struct {
	cfg    config
	db     *dbutil.Database
	signIn *identity.SignIn
	mux    *http.ServeMux
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[string]id.UserID         // session cookie -> officer
	clients  map[id.UserID]*matrix.Client // one Matrix client per officer, opened at first use
}

const sessionCookie = "officer_session"

func newApp(ctx context.Context, cfg config) (*app, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	db, err := matrix.OpenDatabase(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	p, err := identity.Connect(ctx, identity.ProviderOptions{Issuer: cfg.Issuer, ClientID: cfg.ClientID,
		ClientSecret: cfg.ClientSecret, Logger: cfg.Log})
	if err != nil {
		db.Close()
		return nil, err
	}
	// Who holds which Matrix ID is kept in the database: an officer keeps theirs when their
	// address changes, and a second person with the same address never gets it.
	accounts, err := identity.OpenAccounts(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	a := &app{cfg: cfg, db: db, log: cfg.Log, sessions: map[string]id.UserID{}, clients: map[id.UserID]*matrix.Client{}}
	a.signIn, err = identity.NewSignIn(p, identity.SignInOptions{
		RedirectURL: strings.TrimRight(cfg.BaseURL, "/") + "/callback",
		CookieKey:   cfg.CookieKey,
		Mapper:      &identity.Mapper{Server: cfg.ServerName, IDTemplate: identity.TchapIDTemplate, Accounts: accounts},
		OnSignIn:    a.startSession,
		Logger:      cfg.Log,
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	a.mux = http.NewServeMux()
	a.mux.Handle("GET /login", a.signIn.Login())
	a.mux.Handle("GET /callback", a.signIn.Callback())
	a.mux.HandleFunc("GET /{$}", a.home)
	a.mux.HandleFunc("POST /post", a.post)
	return a, nil
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Close closes the officers' clients and the database.
func (a *app) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.clients {
		c.Close()
	}
	return a.db.Close()
}

// startSession is the sign-in's session hook.
func (a *app) startSession(w http.ResponseWriter, r *http.Request, who *identity.Identity) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	sid := base64.RawURLEncoding.EncodeToString(b)
	a.mu.Lock()
	a.sessions[sid] = who.MatrixID
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sid, Path: "/", HttpOnly: true,
		Secure: strings.HasPrefix(a.cfg.BaseURL, "https:"), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusFound)
}

func (a *app) officer(r *http.Request) id.UserID {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[c.Value]
}

func (a *app) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	who := a.officer(r)
	if who == "" {
		fmt.Fprint(w, `<!doctype html><title>Case desk</title><p><a href="/login">Sign in</a></p>`)
		return
	}
	fmt.Fprintf(w, `<!doctype html><title>Case desk</title><p>Signed in as %s</p>
<form method="post" action="/post"><input name="message"><button>Post</button></form>`, html.EscapeString(string(who)))
}

func (a *app) post(w http.ResponseWriter, r *http.Request) {
	who := a.officer(r)
	if who == "" {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	msg := strings.TrimSpace(r.FormValue("message"))
	if msg == "" {
		http.Error(w, "empty message", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	c, err := a.client(ctx, who)
	if err != nil {
		a.log.ErrorContext(ctx, "open the officer's Matrix client", "officer", who, "err", err)
		http.Error(w, "cannot reach the homeserver", http.StatusBadGateway)
		return
	}
	p, err := c.Send(ctx, a.cfg.Room, matrix.Text(msg), matrix.SendOptions{})
	if err == nil {
		_, err = p.Wait(ctx)
	}
	if err != nil {
		a.log.ErrorContext(ctx, "post", "officer", who, "err", err)
		http.Error(w, "the message was not posted", http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "Posted as %s.\n", html.EscapeString(string(who)))
}

// client returns the officer's Matrix client: the stored session, or a new login through the
// appservice (registering the officer's account the first time), joined to the room.
func (a *app) client(ctx context.Context, who id.UserID) (*matrix.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock() // one officer's first post at a time: simple, and rare
	if c := a.clients[who]; c != nil {
		return c, nil
	}
	local := who.Localpart()
	login := matrix.LoginFunc(func(ctx context.Context, hs *mautrix.Client, device string) (*matrix.Session, error) {
		hs.AccessToken = a.cfg.ASToken
		_, _, err := hs.Register(ctx, &mautrix.ReqRegister[any]{Username: local, Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
		hs.AccessToken = ""
		if err != nil && !errors.Is(err, mautrix.MUserInUse) {
			return nil, fmt.Errorf("register %s: %w", who, err)
		}
		return matrix.AppService(a.cfg.ASToken, local).Login(ctx, hs, device)
	})
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: a.cfg.Homeserver, Login: login, DB: a.db,
		SessionName: "officer:" + local, DeviceName: "case desk", Logger: a.log})
	if err != nil {
		return nil, err
	}
	if _, err := c.Join(ctx, string(a.cfg.Room)); err != nil {
		c.Close()
		return nil, fmt.Errorf("join %s: %w", a.cfg.Room, err)
	}
	a.clients[who] = c
	return c, nil
}
