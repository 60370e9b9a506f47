package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/example/orders"
)

// soakSample is one look at every process of a soak.
type soakSample struct {
	at       time.Duration // since the first order
	rssMiB   float64       // all troupe processes (steps, coordinators)
	maxMiB   float64       // the largest one
	heapMiB  float64       // their Go heaps in use (go_memstats_heap_inuse_bytes)
	storeMiB float64       // their state stores' memtables and block caches (troupe_state_memory_bytes): bounded
	lag      float64       // records behind, summed over every input partition of every process
	commitMs float64       // mean commit (transaction) time over the interval since the last sample
	ended    float64       // sagas ended so far (the coordinators' count)
}

// rssMiB reads a process's resident set size from /proc.
func rssMiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// scrape sums the series of each name in names from a process's /metrics.
func scrape(base string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if strings.HasPrefix(line, n+"{") || strings.HasPrefix(line, n+" ") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				out[n] += v
			}
		}
	}
	return out, sc.Err()
}

// mean is the mean of f over samples.
func mean(samples []soakSample, f func(soakSample) float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	sum := 0.0
	for _, s := range samples {
		sum += f(s)
	}
	return sum / float64(len(samples))
}

// TestSagaSoak offers orders at a steady rate for 10 minutes
// (TROUPE_SOAK_DURATION overrides it) to two replicas of every step and of
// the coordinator on a three-node cluster, printing every process's memory,
// the consumer lag and the commit time as it goes; then it checks for a
// growth trend (the last third against the first, after a minute's warm-up)
// and that every saga ended as its order predicts, none lost, no effect
// twice. It runs under TROUPE_CHAOS=long (make chaos) only.
func TestSagaSoak(t *testing.T) {
	if os.Getenv(EnvChaos) != "long" {
		t.Skipf("a 10-minute soak: set %s=long (make chaos)", EnvChaos)
	}
	dur := 10 * time.Minute
	if v := os.Getenv("TROUPE_SOAK_DURATION"); v != "" {
		var err error
		if dur, err = time.ParseDuration(v); err != nil || dur < 3*time.Minute {
			t.Fatalf("TROUPE_SOAK_DURATION=%q: want a duration of at least 3m", v)
		}
	}
	const (
		rate     = 20
		replicas = 2
		every    = 15 * time.Second
		warmUp   = time.Minute
	)
	seed := chaosSeed(t)
	t.Logf("soak: %s at %d orders/s, %d replicas of each step and of the coordinator, seed %d", dur, rate, replicas, seed)

	c := startChaosCluster(t)
	if c.Fake() {
		t.Skip("a soak measures the real broker")
	}
	e := newSagaEnvOn(t, c.Addrs(), "10m", chaosEdits...)
	ctx := context.Background()
	d := &chaosDeploy{e: e, procs: map[string][]*troupeProc{}}
	for _, s := range []string{"payment", "inventory", "shipping", "coordinator"} {
		d.procs[s] = make([]*troupeProc, replicas)
		for r := range replicas {
			d.start(s, r)
		}
	}
	e.ready(e.procs...)
	e.processing(90 * time.Second)

	off := &offerer{e: e, rng: rand.New(rand.NewPCG(seed, 0x0ffe7)), rate: rate, slowFor: 2 * dur, slowEnd: orders.OutcomeCompleted,
		want: map[string]orders.Outcome{}, slow: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go off.run(ctx)
	defer func() {
		select {
		case <-off.stop:
		default:
			close(off.stop)
		}
		<-off.done
	}()

	var samples []soakSample
	var lastSum, lastCount float64
	begin := time.Now()
	t.Logf("%8s %9s %8s %9s %10s %8s %10s %8s", "t", "RSS MiB", "max MiB", "heap MiB", "store MiB", "lag", "commit ms", "ended")
	for next := begin.Add(every); ; next = next.Add(every) {
		time.Sleep(time.Until(next))
		e.alive()
		s := soakSample{at: time.Since(begin)}
		var sum, cnt float64
		for _, p := range d.all() {
			mib, err := rssMiB(p.cmd.Process.Pid)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			s.rssMiB += mib
			s.maxMiB = max(s.maxMiB, mib)
			m, err := scrape(p.http, "troupe_step_consumer_lag", "troupe_step_commit_seconds_sum", "troupe_step_commit_seconds_count", "troupe_saga_duration_seconds_count",
				"go_memstats_heap_inuse_bytes", "troupe_state_memory_bytes")
			if err != nil {
				t.Fatalf("scrape %s: %v", p.name, err)
			}
			s.lag += m["troupe_step_consumer_lag"]
			s.heapMiB += m["go_memstats_heap_inuse_bytes"] / (1 << 20)
			s.storeMiB += m["troupe_state_memory_bytes"] / (1 << 20)
			sum += m["troupe_step_commit_seconds_sum"]
			cnt += m["troupe_step_commit_seconds_count"]
			s.ended += m["troupe_saga_duration_seconds_count"]
		}
		if cnt > lastCount {
			s.commitMs = (sum - lastSum) / (cnt - lastCount) * 1000
		}
		lastSum, lastCount = sum, cnt
		samples = append(samples, s)
		t.Logf("%8s %9.1f %8.1f %9.1f %10.1f %8.0f %10.1f %8.0f", s.at.Round(time.Second), s.rssMiB, s.maxMiB, s.heapMiB, s.storeMiB, s.lag, s.commitMs, s.ended)
		if s.at >= dur {
			break
		}
	}
	close(off.stop)
	<-off.done
	if err := e.cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	off.mu.Lock()
	run := chaosRun{want: off.want, slow: off.slow, start: off.start, end: off.placed}
	errs := off.errs
	off.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d orders not offered: %v", len(errs), errs[:min(5, len(errs))])
	}

	// The trend: the last third of the samples after the warm-up against the first.
	var steady []soakSample
	for _, s := range samples {
		if s.at > warmUp {
			steady = append(steady, s)
		}
	}
	third := len(steady) / 3
	first, last := steady[:third], steady[len(steady)-third:]
	rss := func(s soakSample) float64 { return s.rssMiB }
	lag := func(s soakSample) float64 { return s.lag }
	commit := func(s soakSample) float64 { return s.commitMs }
	heap := func(s soakSample) float64 { return s.heapMiB }
	store := func(s soakSample) float64 { return s.storeMiB }
	r0, r1 := mean(first, rss), mean(last, rss)
	h0, h1 := mean(first, heap), mean(last, heap)
	s0, s1 := mean(first, store), mean(last, store)
	l0, l1 := mean(first, lag), mean(last, lag)
	c0, c1 := mean(first, commit), mean(last, commit)
	t.Logf("soak trend (first third → last third after a %s warm-up): RSS %.1f → %.1f MiB (%+.1f%%); state stores' memtables and caches %.1f → %.1f MiB (bounded); Go heaps %.1f → %.1f MiB (%+.1f%%); lag %.0f → %.0f, commit %.1f → %.1f ms",
		warmUp, r0, r1, 100*(r1-r0)/r0, s0, s1, h0, h1, 100*(h1-h0)/max(h0, 1), l0, l1, c0, c1)

	v := e.verify(ctx, run, 5*time.Minute)
	p50, p99 := baseline(run, v)
	t.Logf("soak: %d sagas offered over %s: %d completed, %d compensated; order to end p50 %s p99 %s; lost %d, duplicated effects %d, wrong ends %d; read in %s",
		len(run.want), run.end.Sub(run.start).Round(time.Second), v.completed, v.compd, p50.Round(time.Millisecond), p99.Round(time.Millisecond),
		v.lost, v.dup, v.wrong, v.readIn.Round(100*time.Millisecond))
	for _, p := range v.problems {
		t.Error(p)
	}
	if !v.complete || v.lost != 0 || v.dup != 0 || v.wrong != 0 || v.deadLetters != 0 || v.unexpected != 0 {
		t.Errorf("complete %v, lost %d, duplicated %d, wrong %d, dead letters %d, never offered %d: want every saga, all 0", v.complete, v.lost, v.dup, v.wrong, v.deadLetters, v.unexpected)
	}
	// Tolerances: a shared 2-core machine moves commit times and lag by
	// itself; a leak or a growing backlog moves them steadily.
	if r1 > r0*1.25 {
		t.Errorf("RSS grew %.1f → %.1f MiB (more than 25%%) over the soak", r0, r1)
	}
	if l1 > max(2*l0, 2*rate) {
		t.Errorf("lag grew %.0f → %.0f records over the soak", l0, l1)
	}
	if c1 > max(2*c0, c0+50) {
		t.Errorf("commit time grew %.1f → %.1f ms over the soak", c0, c1)
	}
}
