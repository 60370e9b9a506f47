//go:build !linux

package kafkaharness

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts a node in its own process group. Without Linux's
// parent-death signal, a test process killed by SIGKILL leaves its nodes
// running; Stop and Main's signal handler cover the other exits.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// StartChild starts cmd in its own process group.
func StartChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = sysProcAttr()
	return cmd.Start()
}
