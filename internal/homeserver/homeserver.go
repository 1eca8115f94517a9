// Package homeserver runs a Dendrite Matrix homeserver as a child process, on loopback.
//
// It is the machinery behind matrixtest (for tests) and `samtal dev` (for a development
// server): finding or building the binary, writing its configuration, choosing ports,
// starting, waiting until it answers, stopping, and registering users with the shared secret.
package homeserver

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix/id"
)

// RateLimit configures Dendrite's client API rate limiter.
type RateLimit struct {
	Threshold int           // requests allowed in a burst; 0 means Dendrite's default of 20
	Cooloff   time.Duration // wait imposed after the burst; 0 means 500 ms
}

// Options configure a homeserver. Dir is required; the zero value of every other field is a
// working default.
type Options struct {
	Dir         string                           // data directory: config, keys, SQLite databases, media, log
	Binary      string                           // path of the dendrite binary; "" finds or builds one (FindDendrite)
	Host        string                           // address to listen on; "" means 127.0.0.1
	Port        int                              // HTTP (client API) port; 0 picks a free one
	ServerName  string                           // "" means "localhost"; ignored when Federation is set
	Federation  bool                             // also serve federation over HTTPS; the server name becomes localhost:HTTPS_PORT
	RateLimit   *RateLimit                       // nil turns Dendrite's rate limiter off
	AppServices []string                         // paths of appservice registration files to load
	MaxUpload   int64                            // largest media upload in bytes; 0 means 100 MiB
	Logf        func(format string, args ...any) // progress messages ("building dendrite..."); nil is silent

	// Federation with distinct host names (issue 13):
	HostName string   // with Federation, the host part of the server name (HostName:HTTPS_PORT); "" means localhost
	Env      []string // extra environment of the Dendrite process, such as HTTPS_PROXY for its federation requests
}

// Homeserver is a running (or stopped) Dendrite process.
type Homeserver struct {
	opts       Options
	binary     string
	secret     string
	host       string
	httpPort   int
	httpsPort  int
	serverName string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	exitErr error
}

// ErrPortInUse is returned when a fixed port cannot be bound.
var ErrPortInUse = errors.New("port in use")

const (
	startAttempts = 5
	readyTimeout  = 2 * time.Minute
	stopTimeout   = 15 * time.Second
)

// Start prepares opts.Dir and starts the homeserver, returning once it answers client requests
// (and, with Federation, federation requests). When the ports were chosen here and turn out to be
// taken by the time Dendrite binds them, it retries on other ports.
func Start(ctx context.Context, opts Options) (*Homeserver, error) {
	if opts.Dir == "" {
		return nil, errors.New("homeserver: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("homeserver: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("homeserver: %w", err)
	}
	opts.Dir = dir
	h := &Homeserver{opts: opts, host: opts.Host, binary: opts.Binary}
	if h.host == "" {
		h.host = "127.0.0.1"
	}
	if h.binary == "" {
		if h.binary, err = FindDendrite(ctx, opts.Logf); err != nil {
			return nil, err
		}
	}
	h.secret = randomString(24)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("homeserver: %w", err)
	}
	fresh := len(entries) == 0
	for attempt := 1; ; attempt++ {
		if err := h.choosePorts(); err != nil {
			return nil, err
		}
		err := h.Start(ctx)
		if err == nil {
			return h, nil
		}
		if !errors.Is(err, ErrPortInUse) || opts.Port != 0 || !fresh || attempt == startAttempts {
			return nil, err
		}
		// Another process took a port between our probe and Dendrite's bind. Its databases
		// may already name the old server name, so start over in a clean directory.
		if err := clearDir(dir); err != nil {
			return nil, err
		}
	}
}

func (h *Homeserver) choosePorts() error {
	h.httpPort = h.opts.Port
	if h.httpPort == 0 {
		p, err := pickPort(h.host)
		if err != nil {
			return err
		}
		h.httpPort = p
	}
	h.serverName = h.opts.ServerName
	if h.serverName == "" {
		h.serverName = "localhost"
	}
	if h.opts.Federation {
		p, err := pickPort(h.host)
		if err != nil {
			return err
		}
		h.httpsPort = p
		host := h.opts.HostName
		if host == "" {
			host = "localhost"
		}
		h.serverName = host + ":" + strconv.Itoa(p)
	}
	return nil
}

// URL is the base URL of the client-server API, such as http://127.0.0.1:41234.
func (h *Homeserver) URL() string {
	return "http://" + net.JoinHostPort(h.host, strconv.Itoa(h.httpPort))
}

// ServerName is the homeserver's name, the part of user IDs after the colon.
func (h *Homeserver) ServerName() string { return h.serverName }

// Dir is the data directory.
func (h *Homeserver) Dir() string { return h.opts.Dir }

// FederationAddr is the loopback address of the federation (HTTPS) listener, "" without
// Federation.
func (h *Homeserver) FederationAddr() string {
	if !h.opts.Federation {
		return ""
	}
	return net.JoinHostPort(h.host, strconv.Itoa(h.httpsPort))
}

// TLSCertFile is the path of the federation listener's self-signed certificate (PEM).
func (h *Homeserver) TLSCertFile() string { return filepath.Join(h.opts.Dir, tlsCertFile) }

// Start starts a stopped homeserver again on the same ports, with the same data.
func (h *Homeserver) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		return errors.New("homeserver: already running")
	}
	if err := writeSigningKey(h.opts.Dir); err != nil {
		return fmt.Errorf("homeserver: signing key: %w", err)
	}
	args := []string{"--config", filepath.Join(h.opts.Dir, configFile),
		"--http-bind-address", net.JoinHostPort(h.host, strconv.Itoa(h.httpPort))}
	if h.opts.Federation {
		if err := writeTLS(h.opts.Dir, h.opts.HostName); err != nil {
			return fmt.Errorf("homeserver: TLS certificate: %w", err)
		}
		args = append(args,
			"--https-bind-address", net.JoinHostPort(h.host, strconv.Itoa(h.httpsPort)),
			"--tls-cert", filepath.Join(h.opts.Dir, tlsCertFile),
			"--tls-key", filepath.Join(h.opts.Dir, tlsKeyFile))
	}
	cd := configData{
		Dir:            h.opts.Dir,
		ServerName:     h.serverName,
		SharedSecret:   h.secret,
		Federation:     h.opts.Federation,
		AppServices:    h.opts.AppServices,
		MaxUploadBytes: h.opts.MaxUpload,
		RateThreshold:  20,
		RateCooloffMS:  500,
	}
	if cd.MaxUploadBytes == 0 {
		cd.MaxUploadBytes = 100 << 20
	}
	if rl := h.opts.RateLimit; rl != nil {
		cd.RateLimit = true
		if rl.Threshold > 0 {
			cd.RateThreshold = rl.Threshold
		}
		if rl.Cooloff > 0 {
			cd.RateCooloffMS = int(rl.Cooloff / time.Millisecond)
		}
	}
	if err := writeConfig(cd); err != nil {
		return fmt.Errorf("homeserver: %w", err)
	}

	// Dendrite 0.13.8 can panic on start when federation work from its last run is still
	// queued; a second start gets past it.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		lastErr = h.startOnce(ctx, args)
		if lastErr == nil || errors.Is(lastErr, ErrPortInUse) || ctx.Err() != nil {
			return lastErr
		}
	}
	return lastErr
}

func (h *Homeserver) startOnce(ctx context.Context, args []string) error {
	logf, err := os.OpenFile(filepath.Join(h.opts.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("homeserver: open log: %w", err)
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(h.binary, args...)
	cmd.Dir = h.opts.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if len(h.opts.Env) > 0 {
		cmd.Env = append(os.Environ(), h.opts.Env...)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("homeserver: start %s: %w", h.binary, err)
	}
	exited := make(chan struct{})
	h.cmd, h.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		h.exitErr = err // read only after <-exited, which orders it
		close(exited)
	}()

	err = h.waitReady(ctx, exited)
	stolen := err == nil && !h.ownsPorts(cmd.Process.Pid)
	if err == nil && !stolen {
		return nil
	}
	_ = cmd.Process.Kill()
	<-exited
	h.cmd = nil
	log := h.logSince(logStart)
	if stolen || strings.Contains(log, "address already in use") {
		return fmt.Errorf("homeserver: %w: %s", ErrPortInUse, h.URL())
	}
	return fmt.Errorf("homeserver: dendrite did not become ready: %w\n--- dendrite log ---\n%s", err, tail(log, 60))
}

// ownsPorts reports whether Dendrite (pid) holds its listening ports, rather than another
// process that answered the readiness probe on them.
func (h *Homeserver) ownsPorts(pid int) bool {
	if !listensOn(pid, h.httpPort) {
		return false
	}
	return !h.opts.Federation || listensOn(pid, h.httpsPort)
}

func (h *Homeserver) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // our own self-signed test certificate
	}}
	defer client.CloseIdleConnections()
	urls := []string{h.URL() + "/_matrix/client/versions"}
	if h.opts.Federation {
		urls = append(urls, "https://"+net.JoinHostPort(h.host, strconv.Itoa(h.httpsPort))+"/_matrix/key/v2/server")
	}
	// A probe ends when the process does: on a port that another process holds (and does not
	// answer on), it would otherwise wait for the client's timeout after Dendrite gave up.
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go func() {
		select {
		case <-exited:
			stopProbes()
		case <-probeCtx.Done():
		}
	}()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for len(urls) > 0 {
		if ok(probeCtx, client, urls[0]) {
			urls = urls[1:]
			continue
		}
		select {
		case <-exited:
			return fmt.Errorf("dendrite exited: %v", h.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func ok(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop stops the homeserver gracefully (SIGTERM), killing it if it has not exited after 15 s.
// Stopping a stopped server does nothing.
func (h *Homeserver) Stop() error {
	return h.stop(syscall.SIGTERM)
}

// Kill stops the homeserver with SIGKILL, as a crash would.
func (h *Homeserver) Kill() error {
	return h.stop(syscall.SIGKILL)
}

func (h *Homeserver) stop(sig syscall.Signal) error {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("homeserver: dendrite ignored SIGTERM for %s and was killed", stopTimeout)
	}
	return nil
}

// Running reports whether the process is running.
func (h *Homeserver) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return false
	}
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// Log returns the last n lines of the server's log.
func (h *Homeserver) Log(n int) string {
	return tail(h.logSince(0), n)
}

func (h *Homeserver) logSince(offset int64) string {
	f, err := os.Open(filepath.Join(h.opts.Dir, logFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	return string(b)
}

// Registration is a user created with Register.
type Registration struct {
	UserID      id.UserID   `json:"user_id"`
	AccessToken string      `json:"access_token"`
	DeviceID    id.DeviceID `json:"device_id"`
}

// Register creates a user through the shared-secret registration API (/_synapse/admin/v1/register,
// which Dendrite implements).
func (h *Homeserver) Register(ctx context.Context, localpart, password string, admin bool) (*Registration, error) {
	url := h.URL() + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := doJSON(ctx, http.MethodGet, url, nil, &nonce); err != nil {
		return nil, fmt.Errorf("homeserver: register %s: get nonce: %w", localpart, err)
	}
	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac := hmac.New(sha1.New, []byte(h.secret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, localpart, password, role}, "\x00")))
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    admin,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	var reg Registration
	if err := doJSON(ctx, http.MethodPost, url, req, &reg); err != nil {
		return nil, fmt.Errorf("homeserver: register %s: %w", localpart, err)
	}
	return &reg, nil
}

// HTTPError is a non-2xx answer from the homeserver to one of our own requests.
type HTTPError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

func doJSON(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &HTTPError{Status: resp.StatusCode}
		_ = json.Unmarshal(b, e)
		return e
	}
	return json.Unmarshal(b, out)
}

// pickPort chooses a port for the server; tests replace it to force a clash.
var pickPort = freePort

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("homeserver: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
