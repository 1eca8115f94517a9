//go:build !linux

package homeserver

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// listensOn cannot tell here; the readiness probe alone decides.
func listensOn(pid, port int) bool { return true }
