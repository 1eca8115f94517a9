package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTimes is the CPU time (user and system) of process pid and of each of its children (the
// homeserver that samtal dev runs), by process name; empty where /proc cannot be read.
func cpuTimes(pid int) map[string]time.Duration {
	out := map[string]time.Duration{}
	if pid <= 0 {
		return out
	}
	add := func(p int, label string) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return
		}
		// The name is in parentheses and may hold spaces; the fields after it are plain.
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			return
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 13 {
			return
		}
		// Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		if label == "" {
			label = s[open+1 : close]
		}
		out[label] += time.Duration(u+st) * clockTick
	}
	add(pid, "gateway")
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, k := range strings.Fields(string(kids)) {
			if n, err := strconv.Atoi(k); err == nil {
				add(n, "")
			}
		}
	}
	return out
}

// cpuPer reports the CPU time each process used between before and after, per unit of work.
func cpuPer(before, after map[string]time.Duration, n int, unit string) string {
	if n <= 0 || len(after) == 0 {
		return ""
	}
	var parts []string
	for _, name := range []string{"gateway", "dendrite"} {
		if d, ok := after[name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f ms", name, float64((d-before[name]).Microseconds())/1000/float64(n)))
		}
	}
	for name, d := range after {
		if name != "gateway" && name != "dendrite" {
			parts = append(parts, fmt.Sprintf("%s %.1f ms", name, float64((d-before[name]).Microseconds())/1000/float64(n)))
		}
	}
	return fmt.Sprintf("CPU per %s: %s", unit, strings.Join(parts, ", "))
}
