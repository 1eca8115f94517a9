//go:build !linux

package homeserver

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
