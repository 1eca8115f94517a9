package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

var sink int

// TestCPUTimes: the CPU time of this process grows with work done, and a child process is
// found by its name.
func TestCPUTimes(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	before := cpuTimes(os.Getpid())
	if _, ok := before["gateway"]; !ok {
		t.Fatalf("no CPU time for the process itself: %v", before)
	}
	if _, ok := before["sleep"]; !ok {
		t.Fatalf("the child process is not listed: %v", before)
	}
	// Busy until the CPU time grows; on a loaded machine the wall time that takes varies, so
	// the bound is generous and only a count that never grows fails.
	after := before
	for start := time.Now(); after["gateway"] <= before["gateway"] && time.Since(start) < 30*time.Second; {
		for x := 0; x < 1e6; x++ {
			sink += x
		}
		after = cpuTimes(os.Getpid())
	}
	if after["gateway"] <= before["gateway"] {
		t.Errorf("CPU time did not grow after 30 s of work: %v then %v", before["gateway"], after["gateway"])
	}
	if line := cpuPer(before, after, 10, "event"); line == "" {
		t.Error("no CPU line")
	}
	if got := cpuTimes(0); len(got) != 0 {
		t.Errorf("pid 0: %v, want nothing", got)
	}
}
