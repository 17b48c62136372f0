package main

import "syscall"

// childProcAttr makes dev's node processes die with it, even on kill -9.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
