package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/homeserver"
)

// runDev runs a development homeserver until interrupted, with its data kept in a folder so
// that a second run continues where the first stopped.
func runDev(ctx context.Context, e *env, args []string) error {
	if i := devUserIndex(args); i >= 0 {
		// `samtal dev [-dir D] user add NAME`: the flags before "user" are the subcommand's.
		return runDevUser(ctx, e, append(slices.Clone(args[i+1:]), args[:i]...))
	}
	fs := newFlags(e, "dev")
	dir := fs.String("dir", ".samtal-dev", "folder for the homeserver's data (kept between runs)")
	port := fs.Int("port", 8008, "client API port on loopback")
	user := fs.String("user", "demo", "demo user to create")
	smtpPort := fs.Int("smtp-port", 2525, "SMTP port of the mail gateway on loopback (a free one if it is taken)")
	dnsServer := fs.String("dns", "", "DNS server (host:port) for the gateway's SPF, DKIM and DMARC lookups; empty: the system's resolver")
	hsDirFlag := fs.String("homeserver-dir", "", "folder for the homeserver's own data; empty: homeserver/ in -dir (a benchmark may put it in /dev/shm, the gateway's spool staying in -dir)")
	setUsage(fs, "dev [flags]\n       samtal dev user add [-dir DIR] NAME", `Runs a development homeserver (Dendrite) on loopback until interrupted, with a demo user,
and the mail gateway (SMTP on loopback) with a route into a room the demo user is in,
its data kept in -dir for the next run. While it runs, 'samtal dev user add NAME' (with the
same -dir) adds a user and prints its password, through the admin endpoint it prints.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *port <= 0 || *port > 65535 {
		return fmt.Errorf("%w: -port %d is not a TCP port", errUsage, *port)
	}
	if *smtpPort < 0 || *smtpPort > 65535 {
		return fmt.Errorf("%w: -smtp-port %d is not a TCP port", errUsage, *smtpPort)
	}

	hsDir := filepath.Join(*dir, "homeserver")
	if *hsDirFlag != "" {
		hsDir = *hsDirFlag
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
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
	admin, err := startDevAdmin(ctx, e, hs, *dir)
	if err != nil {
		return err
	}
	defer admin.close()
	mail, err := startDevGateway(ctx, e, hs, *dir, *user, password, *smtpPort, *dnsServer)
	if err != nil {
		return err
	}
	defer mail.close()
	fmt.Fprintf(e.stdout, `samtal development homeserver is running.

  homeserver  %s
  server name %s
  user        @%s:%s
  password    %s
  data        %s
  log         %s
  admin       %s  (add users: samtal dev user add -dir %s NAME)
  mail        smtp %s, %s -> room %s
  metrics     http://%s/metrics

Log in with any Matrix client (Element: "Edit" the homeserver, enter the URL above),
or with mautrix from Go. Stop with Ctrl-C; the data stays for the next run.

Send a mail into the demo room:

  %s
`, hs.URL(), hs.ServerName(), *user, hs.ServerName(), password, hsDir, filepath.Join(hsDir, "dendrite.log"), admin.url, *dir,
		mail.rg.smtpAddr, mail.address, mail.room, mail.rg.httpAddr, mail.swaks)

	<-ctx.Done()
	e.log.Info("stopping development homeserver")
	return nil
}

// demoUser registers a user of the development server the first time and remembers its
// password (0600) in dir for later runs and later asks.
func demoUser(ctx context.Context, hs *homeserver.Homeserver, dir, localpart string) (string, error) {
	pwFile := filepath.Join(dir, localpart+".password")
	if b, err := os.ReadFile(pwFile); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 12)
	_, _ = rand.Read(buf)
	password := hex.EncodeToString(buf)
	if _, err := hs.Register(ctx, localpart, password, false); err != nil {
		return "", fmt.Errorf("create user %s: %w", localpart, err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("remember the password of %s: %w", localpart, err)
	}
	return password, nil
}

// devAdminFile is where a running `samtal dev` says how to reach its admin endpoint, in its
// -dir, readable by its owner only.
const devAdminFile = "admin.json"

// devAdminInfo is the content of devAdminFile.
type devAdminInfo struct {
	URL   string `json:"url"`   // http://127.0.0.1:PORT
	Token string `json:"token"` // bearer token for the endpoint
}

// devAdmin is the admin endpoint of a running `samtal dev`: POST /users?name=NAME adds a user
// (or returns the one there is) and answers {"user_id":...,"password":...}.
type devAdmin struct {
	url   string
	srv   *http.Server
	file  string
	wg    sync.WaitGroup
	users sync.Mutex // one registration at a time, so that two asks for one name agree
}

// localpart is what `dev user add` accepts as a user name: the localpart grammar of Matrix.
var localpart = regexp.MustCompile(`^[a-z0-9._=/+-]{1,64}$`)

func startDevAdmin(ctx context.Context, e *env, hs *homeserver.Homeserver, dir string) (*devAdmin, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("admin endpoint: %w", err)
	}
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	info := devAdminInfo{URL: "http://" + l.Addr().String(), Token: hex.EncodeToString(buf)}
	a := &devAdmin{url: info.URL, file: filepath.Join(dir, devAdminFile)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /users", func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+info.Token)) != 1 {
			http.Error(w, "wrong or missing token", http.StatusUnauthorized)
			return
		}
		name := r.URL.Query().Get("name")
		if !localpart.MatchString(name) {
			http.Error(w, fmt.Sprintf("%q is not a user name: use a-z, 0-9 and ._=/+-", name), http.StatusBadRequest)
			return
		}
		a.users.Lock()
		password, err := demoUser(r.Context(), hs, dir, name)
		a.users.Unlock()
		if err != nil {
			e.log.Error("dev: add user", "user", name, "err", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		e.log.Info("dev: user added", "user", name)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(devUser{UserID: id.NewUserID(name, hs.ServerName()), Password: password})
	})
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	b, _ := json.Marshal(info)
	if err := os.WriteFile(a.file, b, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin endpoint: %w", err)
	}
	a.wg.Go(func() { _ = a.srv.Serve(l) })
	return a, nil
}

func (a *devAdmin) close() {
	_ = os.Remove(a.file)
	_ = a.srv.Close()
	a.wg.Wait()
}

// devUser is what `samtal dev user add` prints.
type devUser struct {
	UserID   id.UserID `json:"user_id"`
	Password string    `json:"password"`
}

// devUserIndex returns the position of the subcommand word "user" among args, skipping the
// values of dev's flags, or -1.
func devUserIndex(args []string) int {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			return -1
		case a == "-dir" || a == "--dir" || a == "-port" || a == "--port" || a == "-user" || a == "--user" || a == "-smtp-port" || a == "--smtp-port":
			i++ // its value
		case a == "user":
			return i
		case !strings.HasPrefix(a, "-"):
			return -1
		}
	}
	return -1
}

// runDevUser runs `samtal dev user add NAME` against the `samtal dev` running in -dir.
func runDevUser(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "add" {
		return fmt.Errorf("%w: want 'samtal dev user add [-dir DIR] NAME'", errUsage)
	}
	fs := newFlags(e, "dev user add")
	dir := fs.String("dir", ".samtal-dev", "folder of the running development homeserver (its -dir)")
	asJSON := fs.Bool("json", false, `print {"user_id":...,"password":...}`)
	setUsage(fs, "dev user add [-dir DIR] NAME", "Adds the user NAME to the development homeserver running in DIR, and prints its user ID\nand password. A user that exists already keeps its password.")
	rest, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(rest) != 1 || !localpart.MatchString(rest[0]) {
		return fmt.Errorf("%w: want one NAME of a-z, 0-9 and ._=/+-", errUsage)
	}
	b, err := os.ReadFile(filepath.Join(*dir, devAdminFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: no samtal dev is running with -dir %s; start it first", errUnavailable, *dir)
	}
	if err != nil {
		return err
	}
	var info devAdminInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return fmt.Errorf("read %s: %w", devAdminFile, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, info.URL+"/users?name="+url.QueryEscape(rest[0]), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+info.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: the development homeserver in %s does not answer: %w", errUnavailable, *dir, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("add user %s: %s", rest[0], strings.TrimSpace(string(body)))
	}
	var u devUser
	if err := json.Unmarshal(body, &u); err != nil {
		return fmt.Errorf("add user %s: %w", rest[0], err)
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(u)
	}
	_, err = fmt.Fprintf(e.stdout, "user        %s\npassword    %s\n", u.UserID, u.Password)
	return err
}
