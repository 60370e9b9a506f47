package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/freeport"
)

// These helpers run the real troupe binary as separate processes, the way
// users deploy it: one process per step replica, killed and restarted by the
// tests.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// troupeBin builds cmd/troupe once per test run and returns its path.
func troupeBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		dir, err := os.MkdirTemp("", "troupe-it-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "troupe")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/troupe")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/troupe: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// troupeProc is one troupe process under test.
type troupeProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error
	// stopped is set when the test stopped or killed the process itself.
	stopped bool
	// http is the base URL of its HTTP server, when the test knows it.
	http string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startTroupe starts `troupe args...` against the test brokers. The process
// is stopped at the end of the test; if the test failed, the tail of its log
// is printed.
func startTroupe(t *testing.T, name string, args ...string) *troupeProc {
	t.Helper()
	return startTroupeEnv(t, name, nil, args...)
}

// startTroupeEnv is startTroupe with env (KEY=value) added to, or
// overriding, the process's environment.
func startTroupeEnv(t *testing.T, name string, env []string, args ...string) *troupeProc {
	t.Helper()
	p := &troupeProc{t: t, name: name, log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(troupeBin(t), args...)
	p.cmd.Env = append(os.Environ(), "TROUPE_BROKERS="+strings.Join(kafkaharness.Brokers(), ","), "TROUPE_LOG_FORMAT=json")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start troupe %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- log of %s (last 40 lines)\n%s", name, tail(p.log.String(), 40))
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to 20 s for a clean exit.
func (p *troupeProc) Stop() error {
	p.stopped = true
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop within 20 s of SIGTERM", p.name)
		p.Kill()
		return p.err
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (p *troupeProc) Kill() {
	p.stopped = true
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process has ended.
func (p *troupeProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runTroupe runs `troupe args...` to completion and returns its output.
func runTroupe(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	return runTroupeEnv(t, ctx, nil, args...)
}

// runTroupeEnv is runTroupe with env added to the environment.
func runTroupeEnv(t *testing.T, ctx context.Context, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, troupeBin(t), args...)
	cmd.Env = append(os.Environ(), "TROUPE_BROKERS="+strings.Join(kafkaharness.Brokers(), ","))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a free loopback host:port (freeport.Port).
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freeport.Port(t))
}

// eventually retries cond every 200 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %s", what, timeout, last)
}
