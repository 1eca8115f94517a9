package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 2 * time.Second
	for _, tc := range []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 200 * time.Millisecond, 400 * time.Millisecond},
		{10, time.Second, 2 * time.Second},   // capped
		{1000, time.Second, 2 * time.Second}, // no overflow
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
	} {
		for range 50 {
			if d := Delay(tc.attempt, lo, hi); d < tc.min || d > tc.max {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tc.attempt, d, tc.min, tc.max)
			}
		}
	}
	if d := Server(time.Second); d < time.Second || d > 1100*time.Millisecond {
		t.Errorf("Server(1s) = %s", d)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep outlived its context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep reported a cancelled context")
	}
}
