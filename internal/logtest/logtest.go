// Package logtest captures log/slog output in tests: to assert on what was logged (that no
// message text, token or password is in it), or to show it in the test's log with -v only.
//
//	logger, logs := logtest.Capture()
//	c, err := matrix.New(ctx, matrix.Options{Logger: logger, ...})
//	...
//	if strings.Contains(logs.String(), secret) { t.Error("the log holds the secret") }
package logtest

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Buffer is a log destination that goroutines of the code under test may write while the test
// reads it. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Logger returns a text logger into b at debug level, the level at which most could leak.
func (b *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Capture returns a debug-level text logger and the Buffer it writes to.
func Capture() (*slog.Logger, *Buffer) {
	b := new(Buffer)
	return b.Logger(), b
}

// Verbose returns a text logger at level into tb's log when the tests run with -v, and one that
// discards everything otherwise.
func Verbose(tb testing.TB, level slog.Level) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(Writer(tb), &slog.HandlerOptions{Level: level}))
}

// Writer returns an io.Writer that puts each write, a log line, into tb's log.
func Writer(tb testing.TB) io.Writer { return testWriter{tb} }

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
