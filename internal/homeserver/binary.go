package homeserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// DendriteVersion is the Dendrite release samtal tests against and builds when none is found.
const DendriteVersion = "v0.13.8"

// dendriteModule is the Go package path of Dendrite's server command.
const dendriteModule = "github.com/matrix-org/dendrite/cmd/dendrite"

// lockPollInterval is how often a waiting caller retries the build lock.
const lockPollInterval = 200 * time.Millisecond

// EnvDendrite names the environment variable that points at a Dendrite binary to use.
const EnvDendrite = "SAMTAL_DENDRITE"

// ErrNoDendrite is returned when no Dendrite binary is found and none can be built.
var ErrNoDendrite = errors.New("no dendrite binary")

// FindDendrite returns the path of a Dendrite binary: $SAMTAL_DENDRITE if set, else dendrite on
// PATH, else one built once with `go install` into the user cache directory. Concurrent callers,
// in this process or in other test binaries, build it once: the build holds a file lock.
//
// logf, if not nil, is told when a build starts, since it takes minutes.
func FindDendrite(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if p := os.Getenv(EnvDendrite); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %w", ErrNoDendrite, EnvDendrite, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("dendrite"); err == nil {
		return p, nil
	}
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "dendrite")
	if isExecutable(bin) == nil {
		return bin, nil
	}
	lock := flock.New(filepath.Join(dir, "build.lock"))
	if _, err := lock.TryLockContext(ctx, lockPollInterval); err != nil {
		return "", fmt.Errorf("%w: wait for build lock %s: %w", ErrNoDendrite, lock.Path(), err)
	}
	defer func() { _ = lock.Unlock() }()
	if isExecutable(bin) == nil { // built by whoever held the lock before us
		return bin, nil
	}
	if logf != nil {
		logf("building dendrite %s into %s with `go install` (once per machine; takes a few minutes)", DendriteVersion, dir)
	}
	if err := build(ctx, dir); err != nil {
		return "", err
	}
	return bin, nil
}

// CacheDir is where FindDendrite keeps the Dendrite it builds.
func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("%w: no user cache directory to build it in (set $%s): %w", ErrNoDendrite, EnvDendrite, err)
	}
	dir := filepath.Join(base, "samtal", "dendrite-"+DendriteVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%w: create %s: %w", ErrNoDendrite, dir, err)
	}
	return dir, nil
}

func build(ctx context.Context, dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("%w: building it needs the Go toolchain, and `go` is not on PATH; "+
			"install Go, or set $%s to a dendrite %s binary", ErrNoDendrite, EnvDendrite, DendriteVersion)
	}
	// Build into a temporary GOBIN and rename, so that a killed build never leaves a
	// half-written binary behind that the next caller would trust.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoDendrite, err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, goBin, "install", dendriteModule+"@"+DendriteVersion)
	// Dendrite's SQLite driver is mattn/go-sqlite3, which needs cgo.
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=1", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: `go install %s@%s` failed (it needs a C compiler for SQLite and "+
			"access to the Go module proxy; or set $%s to a dendrite binary): %w\n%s",
			ErrNoDendrite, dendriteModule, DendriteVersion, EnvDendrite, err, tail(string(out), 40))
	}
	if err := os.Rename(filepath.Join(tmp, "dendrite"), filepath.Join(dir, "dendrite")); err != nil {
		return fmt.Errorf("%w: install built binary: %w", ErrNoDendrite, err)
	}
	return nil
}

func isExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
