package homeserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// dendrite returns the binary the tests use, building it if needed.
func dendrite(t *testing.T) string {
	t.Helper()
	bin, err := FindDendrite(t.Context(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// dataDir is a data directory for a test's server: in /dev/shm where the machine has it, as
// matrixtest keeps its servers' (Dendrite's fsyncs on a disk made each start here seconds
// slower), else t.TempDir().
func dataDir(t *testing.T) string {
	t.Helper()
	if dir, err := os.MkdirTemp("/dev/shm", "samtal-homeserver-test-"); err == nil {
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	return t.TempDir()
}

func TestFindDendriteEnvNotExecutable(t *testing.T) {
	notBinary := filepath.Join(t.TempDir(), "dendrite")
	if err := os.WriteFile(notBinary, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{notBinary, filepath.Join(t.TempDir(), "missing")} {
		t.Setenv(EnvDendrite, path)
		_, err := FindDendrite(t.Context(), nil)
		if !errors.Is(err, ErrNoDendrite) || !strings.Contains(err.Error(), EnvDendrite) {
			t.Errorf("%s=%s: error %v, want ErrNoDendrite naming the variable", EnvDendrite, path, err)
		}
	}
}

func TestBuildWithoutGoNamesTheFix(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no go here
	err := build(context.Background(), t.TempDir())
	if !errors.Is(err, ErrNoDendrite) {
		t.Fatalf("error %v, want ErrNoDendrite", err)
	}
	for _, want := range []string{"Go toolchain", EnvDendrite} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestBuildFailureShowsOutput(t *testing.T) {
	// A GOPROXY that refuses everything makes `go install` fail fast, as an offline machine would.
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOMODCACHE", t.TempDir())
	err := build(context.Background(), t.TempDir())
	if !errors.Is(err, ErrNoDendrite) || !strings.Contains(err.Error(), "go install") || !strings.Contains(err.Error(), "GOPROXY") {
		t.Fatalf("error %v, want ErrNoDendrite with the go install output", err)
	}
}

func TestFixedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Start(t.Context(), Options{Dir: dataDir(t), Binary: dendrite(t), Port: l.Addr().(*net.TCPAddr).Port})
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("start on a taken port: %v, want ErrPortInUse", err)
	}
}

func TestPortClashRetries(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	startAroundTakenPort(t, l.Addr().(*net.TCPAddr).Port)
}

func TestRegisterRejectsBadInput(t *testing.T) {
	h, err := Start(t.Context(), Options{Dir: dataDir(t), Binary: dendrite(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	var herr *HTTPError
	if _, err := h.Register(t.Context(), "Not Valid", "long-enough-pw", false); !errors.As(err, &herr) || herr.Status != 400 {
		t.Errorf("invalid localpart: %v, want HTTP 400", err)
	}
	if _, err := h.Register(t.Context(), "short", "pw", false); !errors.As(err, &herr) || herr.ErrCode != "M_WEAK_PASSWORD" {
		t.Errorf("weak password: %v, want M_WEAK_PASSWORD", err)
	}
	h.secret = "wrong"
	if _, err := h.Register(t.Context(), "forged", "long-enough-pw", false); !errors.As(err, &herr) || herr.Status/100 != 4 {
		t.Errorf("wrong shared secret: %v, want a 4xx", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPortTakenByAnotherServer: the port chosen for the server is taken before Dendrite binds
// it by another process that answers the readiness probe, as another test's homeserver does
// (a stand-in answering /versions here). The probe's answer is not taken for ours: the server
// starts on another port and is the one that answers. Before, Start returned a server whose
// URL reached the other process, and the first registration failed with "bad mac".
func TestPortTakenByAnotherServer(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"versions":["v1.1"]}`))
	}))
	defer other.Close()
	taken := other.Listener.Addr().(*net.TCPAddr).Port
	startAroundTakenPort(t, taken)

	// A fixed port that another server answers on is in use.
	_, err := Start(t.Context(), Options{Dir: dataDir(t), Binary: dendrite(t), Port: taken})
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("start on a port another server answers on: %v, want ErrPortInUse", err)
	}
}

// startAroundTakenPort starts a server whose first port choice is taken (firstPortTaken), and
// checks that it started on another port and is the one that answers there.
func startAroundTakenPort(t *testing.T, taken int) {
	t.Helper()
	firstPortTaken(t, taken)
	h, err := Start(t.Context(), Options{Dir: dataDir(t), Binary: dendrite(t)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer h.Stop()
	if strings.HasSuffix(h.URL(), ":"+itoa(taken)) {
		t.Fatalf("server claims the taken port: %s", h.URL())
	}
	if _, err := h.Register(t.Context(), "ours", "long-enough-pw", false); err != nil {
		t.Fatalf("register on the server started on another port: %v", err)
	}
}

// firstPortTaken makes the next start's first port choice taken, as if another process took it
// after we probed it; later choices are free ports.
func firstPortTaken(t *testing.T, taken int) {
	calls := 0
	pickPort = func(host string) (int, error) {
		calls++
		if calls == 1 {
			return taken, nil
		}
		return freePort(host)
	}
	t.Cleanup(func() { pickPort = freePort })
}
