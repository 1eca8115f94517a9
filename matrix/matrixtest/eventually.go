package matrixtest

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns nil, and fails the test with cond's last error when
// WaitTimeout passes first. It waits a little longer after each try, up to half a second.
//
// It is for what a test cannot be told about, such as a join that must wait for an invite to
// travel over federation; to wait for an event, use a Recorder or WaitEvent.
func Eventually(tb testing.TB, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(WaitTimeout)
	pause := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("matrixtest: still failing after %s: %v", WaitTimeout, err)
		}
		select {
		case <-tb.Context().Done():
			tb.Fatalf("matrixtest: test ended while waiting: %v", err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}
