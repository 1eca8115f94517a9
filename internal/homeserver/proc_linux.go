package homeserver

import "syscall"

// sysProcAttr puts Dendrite in its own process group (a terminal's Ctrl-C reaches us, and we
// stop it cleanly) and has the kernel kill it if our process dies without stopping it, so that
// a test binary killed by `go test -timeout` leaves no homeserver behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
