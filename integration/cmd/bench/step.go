package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stepBench runs the counting step (integration/cmd/countstep, as its own
// process, so that its CPU and memory are its own) over the input: each
// Tick decoded, its instance's count read, incremented and written, a
// Counted emitted. With profile it also writes the step's CPU profile to
// b.profile.
func (b *bench) stepBench(ctx context.Context, eos, profile bool) error {
	name, g := "step-alos", "at_least_once"
	if eos {
		name, g = "step-eos", "exactly_once"
	}
	res, err := b.runCountstep(ctx, name, g, b.input, b.events, profile)
	if err != nil {
		return err
	}
	b.addRate(name, eos, res.rate, "countstep process: Avro decode/encode, Pebble state, changelog, dedupe; default concurrency")
	b.addUsage(name, res.usage)
	return nil
}

type stepResult struct {
	rate  float64
	usage usage
	stats stepStats
}

// runCountstep runs countstep over n records of input until its n outputs
// are readable, and measures its rate (from the outputs' append times) and
// its CPU between its first and its last output.
// With profile, it writes the step's CPU profile to b.profile and its heap
// profile, taken once the outputs are in, beside it.
func (b *bench) runCountstep(ctx context.Context, name, guarantee, input string, n int, profile bool, extra ...string) (stepResult, error) {
	bin, err := b.countstep.build(ctx, b.tmp)
	if err != nil {
		return stepResult{}, err
	}
	app := fmt.Sprintf("bench%d", time.Now().UnixNano())
	out := app + "-counted"
	if err := b.createOutput(ctx, out); err != nil {
		return stepResult{}, err
	}
	dir, err := tempDir(name)
	if err != nil {
		return stepResult{}, err
	}
	defer os.RemoveAll(dir)
	args := append([]string{
		"--brokers", strings.Join(b.brokers, ","), "--app", app, "--input", input, "--output", out,
		"--state-dir", filepath.Join(dir, "state"), "--guarantee", guarantee, "--log-level", "warn",
	}, extra...)
	args = append(args, strings.Fields(b.stepArgs)...)
	if profile {
		args = append(args, "--cpuprofile", b.profile)
	}
	rd := b.readOutput(ctx, out, n, 5*time.Minute)
	p, err := startStep(bin, args...)
	if err != nil {
		return stepResult{}, err
	}
	m := meterCPU(p.pid)
	err = rd.wait()
	m.finish()
	stats := p.scrape(ctx)
	if profile && err == nil {
		if herr := p.saveHeap(ctx, b.heapProfile()); herr != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: heap profile: %v\n", name, herr)
		}
	}
	if err == nil {
		// Every output is readable: the group's committed offsets should
		// reach the input's end within a commit or two.
		lag, lerr := b.committedLag(ctx, app+".count", input, 5*time.Second)
		switch {
		case lerr != nil:
			fmt.Fprintf(os.Stderr, "bench: %s: committed offsets: %v\n", name, lerr)
		case lag > 0:
			stats.lag = lag
			fmt.Fprintf(os.Stderr, "bench: %s: WARNING: 5 s after its last output, the group's committed offsets are %d records behind the input's end\n", name, lag)
		}
	}
	if serr := p.stop(); err != nil || serr != nil {
		return stepResult{}, errors.Join(err, serr)
	}
	if stats.ok {
		fmt.Fprintf(os.Stderr, "bench: %s: %s\n", name, stats)
		params := map[string]any{"events": n}
		b.record(name, "commits", stats.commits, "count", params)
		b.record(name, "handler_calls_per_commit", stats.handlerCalls/stats.commits, "calls", params)
		b.record(name, "commit_time_mean", 1000*stats.commitSeconds/stats.commits, "ms", params)
		b.record(name, "transaction_aborts", stats.aborts, "count", params)
		b.record(name, "committed_offsets_behind_input_5s_after_last_output", float64(stats.lag), "records", params)
	}
	return stepResult{rate: rd.rate, usage: usageOf(m, rd, n), stats: stats}, nil
}

// handlerDelay is the step-io handler's wait, as a call to a service.
const handlerDelay = 20 * time.Millisecond

// stepIOBench runs the counting step with a handler that waits 20 ms (on
// its context) over a backlog, at a concurrency: an I/O-bound step, whose
// ceiling is concurrency / 20 ms.
func (b *bench) stepIOBench(ctx context.Context, eos bool, concurrency int) error {
	name, g := "step-io-alos", "at_least_once"
	if eos {
		name, g = "step-io-eos", "exactly_once"
	}
	n := b.ioEvents[concurrency]
	if n == 0 {
		n = b.ioEvents[0]
	}
	input, err := b.ioInput(ctx, n)
	if err != nil {
		return err
	}
	res, err := b.runCountstep(ctx, name, g, input, n, false, "--handler-delay", handlerDelay.String(), "--concurrency", strconv.Itoa(concurrency))
	if err != nil {
		return err
	}
	ceiling := float64(concurrency) / handlerDelay.Seconds()
	label := fmt.Sprintf("%s ×%d", name, concurrency)
	b.rows = append(b.rows, &row{
		name:   label,
		figure: fmt.Sprintf("%.0f events/s", res.rate),
		vs:     fmt.Sprintf("%.2f× ceiling (%.0f/s)", res.rate/ceiling, ceiling),
		note:   fmt.Sprintf("countstep, 20 ms handler, concurrency %d, backlog of %d events over %d keys; ceiling = concurrency / 20 ms; %s", concurrency, n, b.instances, res.stats),
	})
	params := map[string]any{"concurrency": concurrency, "handler_delay_ms": handlerDelay.Milliseconds(), "events": n, "guarantee": g}
	b.record(name, "throughput", res.rate, "events/s", params)
	b.record(name, "throughput_vs_ceiling", res.rate/ceiling, "ratio", params)
	return nil
}

// ioInput is a topic of n Ticks over b.instances keys, filled once.
func (b *bench) ioInput(ctx context.Context, n int) (string, error) {
	if t, ok := b.ioTopics[n]; ok {
		return t, nil
	}
	t := fmt.Sprintf("bench-io-ticks-%d-%d", n, time.Now().UnixNano())
	if err := b.fill(ctx, t, n); err != nil {
		return "", err
	}
	b.ioTopics[n] = t
	return t, nil
}

func (b *bench) heapProfile() string {
	return strings.TrimSuffix(b.profile, ".cpu.pprof") + ".heap.pprof"
}

// profileTop prints the top 15 functions of the step's CPU profile (by
// flat time, and by cumulative time), and the top 10 of its heap (in use
// once its outputs were in, and allocated over the run), and keeps them for
// the results.
func (b *bench) profileTop(ctx context.Context) error {
	if _, err := os.Stat(b.profile); err != nil {
		return fmt.Errorf("no CPU profile of step-eos: %w", err)
	}
	for _, v := range []struct {
		key, file string
		args      []string
	}{
		{"cpu_flat", b.profile, []string{"-nodecount=15"}},
		{"cpu_cum", b.profile, []string{"-nodecount=15", "-cum"}},
		{"heap_inuse_space", b.heapProfile(), []string{"-nodecount=10", "-sample_index=inuse_space"}},
		{"heap_alloc_space", b.heapProfile(), []string{"-nodecount=10", "-sample_index=alloc_space"}},
	} {
		if _, err := os.Stat(v.file); err != nil {
			continue
		}
		args := append(append([]string{"tool", "pprof", "-top"}, v.args...), v.file)
		out, err := exec.CommandContext(ctx, "go", args...).Output()
		if err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		lines := profileLines(string(out))
		fmt.Fprintf(os.Stderr, "bench: step-eos profile, top by %s (%s):\n%s\n", v.key, v.file, strings.Join(lines, "\n"))
		b.profileTops[v.key] = lines
	}
	return nil
}

// profileLines keeps the header and the function lines of pprof -top.
func profileLines(out string) []string {
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// committedLag waits up to wait for group's committed offsets on topic to
// reach its end offsets, and returns how many records they are behind.
func (b *bench) committedLag(ctx context.Context, group, topic string, wait time.Duration) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(wait)
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, err
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return 0, err
		}
		var lag int64
		ends.Each(func(e kadm.ListedOffset) {
			c, ok := committed.Lookup(topic, e.Partition)
			at := int64(0)
			if ok && c.At >= 0 {
				at = c.At
			}
			lag += max(e.Offset-at, 0)
		})
		if lag == 0 || time.Now().After(deadline) {
			return lag, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}
