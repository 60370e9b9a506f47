package kafkaharness

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// sysProcAttr puts a node in its own process group (a terminal's Ctrl-C
// reaches the test process, which stops the nodes in order) and asks the
// kernel to SIGKILL it when its parent dies, so a killed test run leaves no
// JVM behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// The parent-death signal fires when the *thread* that forked the child
// exits, not the process. Go ends a thread when a goroutine locked to it
// returns, which any library may do, so children are forked from one
// goroutine that locks its thread and never returns: that thread lives as
// long as the process. (goleak users: ignore kafkaharness.spawnLoop.)
var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawnLoop(reqs <-chan spawnReq) {
	runtime.LockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}

// StartChild starts cmd as a child that dies with this process: in its own
// process group, with the parent-death signal, forked from the spawner
// thread. The harness starts its brokers with it, and the benchmark peers
// (integration/peers) their JVMs.
func StartChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = sysProcAttr()
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go spawnLoop(spawnCh)
	})
	done := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, done: done}
	return <-done
}
