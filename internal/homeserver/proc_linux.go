package homeserver

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr puts Dendrite in its own process group (a terminal's Ctrl-C reaches us, and we
// stop it cleanly) and has the kernel kill it if our process dies without stopping it, so that
// a test binary killed by `go test -timeout` leaves no homeserver behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// listensOn reports whether process pid holds the listening TCP socket on port: a probe that
// Dendrite is ready must not be answered by another process's server that took the port
// between our choosing it and Dendrite binding it (another test's homeserver, whose answers,
// registration MACs among them, are not ours). It reads /proc/net/tcp{,6} for the socket's
// inode and /proc/PID/fd for a descriptor of it. Where /proc cannot be read it says yes.
func listensOn(pid, port int) bool {
	inodes := map[string]bool{}
	readable := false
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		readable = true
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if !readable {
		return true
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return true
	}
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); err == nil && inodes[target] {
			return true
		}
	}
	return false
}
