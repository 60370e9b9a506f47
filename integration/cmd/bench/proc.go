package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux this runs on.
const clockTicks = 100

// procCPU is the CPU time (user + system) pid has used so far, from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after the last ')' start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	// utime and stime are fields 14 and 15, i.e. f[11] and f[12].
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procPeakRSS is pid's peak resident set (VmHWM) in bytes.
func procPeakRSS(pid int) (int64, error) {
	v := procField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM", "")
	var kb int64
	if _, err := fmt.Sscanf(v, "%d kB", &kb); err != nil {
		return 0, fmt.Errorf("/proc/%d/status: VmHWM %q", pid, v)
	}
	return kb << 10, nil
}

// findPid is the first process whose command line holds every one of
// words (as whole arguments), or 0.
func findPid(words ...string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		all := true
		for _, w := range words {
			found := false
			for _, a := range args {
				found = found || a == w
			}
			all = all && found
		}
		if all {
			return pid
		}
	}
	return 0
}

// cpuSample is a process's CPU time at a moment.
type cpuSample struct {
	at  time.Time
	cpu time.Duration
}

// cpuMeter samples a process's CPU time every 20 ms (the counters move in
// 10 ms steps), so that the CPU a processor spent between two moments,
// e.g. its first and its last output, can be read off afterwards, and
// reads its peak RSS at the end.
type cpuMeter struct {
	mu      sync.Mutex
	pid     int
	samples []cpuSample
	peakRSS int64
	stop    chan struct{}
	done    chan struct{}
}

// meterCPU starts sampling the process pid() names (it is asked again
// until it names one, for a process found by its command line).
func meterCPU(pid func() int) *cpuMeter {
	m := &cpuMeter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			m.sample(pid)
			select {
			case <-m.stop:
				m.sample(pid)
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *cpuMeter) sample(pid func() int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pid == 0 {
		m.pid = pid()
		if m.pid == 0 {
			return
		}
	}
	now := time.Now()
	c, err := procCPU(m.pid)
	if err != nil {
		return // exited
	}
	if rss, err := procPeakRSS(m.pid); err == nil {
		m.peakRSS = max(m.peakRSS, rss)
	}
	m.samples = append(m.samples, cpuSample{now, c})
}

// finish stops sampling; call it while the process still runs, so that
// the last sample and the peak RSS are the process's.
func (m *cpuMeter) finish() {
	close(m.stop)
	<-m.done
}

// between is the CPU time the process spent from a to b: the last sample
// at or before a to the first at or after b (so it errs by at most one
// sampling period on each side, upwards).
func (m *cpuMeter) between(a, b time.Time) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var from, to *cpuSample
	for i := range m.samples {
		s := &m.samples[i]
		if !s.at.After(a) {
			from = s
		}
		if to == nil && !s.at.Before(b) {
			to = s
		}
	}
	if from == nil && len(m.samples) > 0 {
		from = &m.samples[0] // the process started after a: it used nothing before
	}
	if from == nil || to == nil {
		return 0, false
	}
	return to.cpu - from.cpu, true
}

// usage is what a processor cost: CPU-seconds per million events and its
// peak RSS.
type usage struct {
	cpuPerM float64 // CPU-seconds per million events
	cpu     time.Duration
	rss     int64 // bytes
	ok      bool
}

func (u usage) String() string {
	if !u.ok {
		return "CPU not measured"
	}
	return fmt.Sprintf("%.1f CPU-s per M events, peak RSS %s", u.cpuPerM, mib(u.rss))
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// usageOf is the CPU m's process spent on the n outputs rd saw, from the
// first output's append time to the last's.
func usageOf(m *cpuMeter, rd *outputReader, n int) usage {
	cpu, ok := m.between(rd.first, rd.last)
	if !ok || n < 2 {
		return usage{}
	}
	return usage{cpuPerM: cpu.Seconds() / float64(n-1) * 1e6, cpu: cpu, rss: m.peakRSS, ok: true}
}

// countstep is the counting step binary (integration/cmd/countstep), built
// once per run, so that the step benchmarks run it as its own process and
// measure its own CPU and memory.
type countstep struct {
	once sync.Once
	bin  string
	err  error
}

func (c *countstep) build(ctx context.Context, dir string) (string, error) {
	c.once.Do(func() {
		c.bin = filepath.Join(dir, "countstep")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", c.bin, "github.com/troupehq/troupe/integration/cmd/countstep")
		if out, err := cmd.CombinedOutput(); err != nil {
			c.err = fmt.Errorf("build countstep: %w\n%s", err, out)
		}
	})
	return c.bin, c.err
}

// stepProc is a running countstep.
type stepProc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	tail    []string
	metrics string // its metrics URL, once it printed it
	done    chan struct{}
	err     error
}

// startStep starts bin with args; its stderr is kept (the last lines) for
// error messages.
func startStep(bin string, args ...string) (*stepProc, error) {
	p := &stepProc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := kafkaharness.StartChild(p.cmd); err != nil {
		return nil, fmt.Errorf("start countstep: %w", err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if u, ok := strings.CutPrefix(sc.Text(), "countstep: metrics on "); ok {
				p.metrics = u
			}
			p.tail = append(p.tail, sc.Text())
			if len(p.tail) > 30 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
	}()
	return p, nil
}

func (p *stepProc) pid() int { return p.cmd.Process.Pid }

// stop ends the step with SIGTERM (a clean shutdown, which also writes its
// CPU profile), and kills it after 30 s.
func (p *stepProc) stop() error {
	select {
	case <-p.done:
		return fmt.Errorf("countstep exited before it was stopped (%v):\n%s", p.err, p.lastLines())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("countstep ignored SIGTERM for 30 s:\n%s", p.lastLines())
	}
	if p.err != nil {
		return fmt.Errorf("countstep: %v:\n%s", p.err, p.lastLines())
	}
	return nil
}

func (p *stepProc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stepStats are what a countstep's metrics say about its run: how its
// intervals went.
type stepStats struct {
	commits       float64 // intervals committed
	commitSeconds float64 // time spent committing them
	aborts        float64
	handlerCalls  float64
	ok            bool
	lag           int64 // committed offsets behind the input's end after the last output (set by runCountstep)
}

// scrape reads the step's metrics (summed over their labels).
func (p *stepProc) scrape(ctx context.Context) stepStats {
	p.mu.Lock()
	u := p.metrics
	p.mu.Unlock()
	if u == "" {
		return stepStats{}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return stepStats{}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return stepStats{}
	}
	defer resp.Body.Close()
	var st stepStats
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch name {
		case "troupe_step_commit_seconds_count":
			st.commits += v
		case "troupe_step_commit_seconds_sum":
			st.commitSeconds += v
		case "troupe_step_transaction_aborts_total":
			st.aborts += v
		case "troupe_step_handler_seconds_count":
			st.handlerCalls += v
		}
	}
	st.ok = sc.Err() == nil && st.commits > 0
	return st
}

func (s stepStats) String() string {
	if !s.ok {
		return ""
	}
	out := fmt.Sprintf("%.0f commits (%.0f handler calls per commit, %.0f ms per commit), %.0f aborted",
		s.commits, s.handlerCalls/s.commits, 1000*s.commitSeconds/s.commits, s.aborts)
	if s.lag > 0 {
		out += fmt.Sprintf("; committed offsets %d records behind the input 5 s after the last output", s.lag)
	}
	return out
}

// saveHeap writes the step's heap profile (/debug/pprof/heap) to path.
func (p *stepProc) saveHeap(ctx context.Context, path string) error {
	p.mu.Lock()
	u := p.metrics
	p.mu.Unlock()
	if u == "" {
		return errors.New("no metrics listener")
	}
	u = strings.TrimSuffix(u, "/metrics") + "/debug/pprof/heap"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
