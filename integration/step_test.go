package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/cmd/countstep/events"
	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/state"
)

// These tests run the counting step (integration/cmd/countstep) as real
// processes against the broker under test, kill them, and check the two
// promises of the README's Writing a step section: one output per input (exactly-once, read
// read_committed) and exact per-instance state, through kill -9, restarts,
// lost state dirs and rebalances; and durable timers that fire once.

const (
	stepPartitions = 8
	stepInstances  = 1000
	// Kill tests use the classic protocol with a short session, so that a
	// killed member's partitions move in seconds (the KIP-848 session
	// timeout is the broker's, 45 s by default).
	stepSession = "6s"
)

func stepEvents(t *testing.T) int {
	if testing.Short() {
		return 20_000
	}
	return 100_000
}

// stepEnv is one test's topics, group and processes.
type stepEnv struct {
	t       *testing.T
	brokers []string
	app     string
	input   string
	output  string
	bin     string
	logs    string // process logs; outlive the cleanup that prints them
	serde   *avro.Serde
	cl      *kgo.Client
	adm     *kadm.Client

	mu    sync.Mutex
	procs []*countProc
}

func newStepEnv(t *testing.T) *stepEnv {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	e := &stepEnv{
		t:       t,
		brokers: kafkaharness.Brokers(),
		app:     name + "-" + suffix,
		input:   name + "-ticks-" + suffix,
		output:  name + "-counted-" + suffix,
	}
	var err error
	if e.serde, err = events.NewSerde(); err != nil {
		t.Fatal(err)
	}
	e.cl = newClient(t, e.brokers, kgo.ProducerLinger(5*time.Millisecond))
	e.adm = kadm.NewClient(e.cl)
	ctx := t.Context()
	createTopic(t, ctx, e.adm, e.input, stepPartitions, -1, nil)
	createTopic(t, ctx, e.adm, e.output, stepPartitions, -1, nil)

	e.logs = t.TempDir()
	if d := os.Getenv("TROUPE_TEST_LOGS"); d != "" {
		e.logs = d
	}
	e.bin = filepath.Join(t.TempDir(), "countstep")
	build := exec.Command("go", "build", "-o", e.bin, "github.com/troupehq/troupe/integration/cmd/countstep")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build countstep: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.procs {
			p.kill()
			if t.Failed() {
				t.Logf("log tail of %s:\n%s", p.name, p.tail(40))
			}
		}
	})
	return e
}

func (e *stepEnv) key(seq int) string { return fmt.Sprintf("k-%04d", seq%stepInstances) }

// produce sends ticks [from, to), spread over the instances.
func (e *stepEnv) produce(ctx context.Context, from, to int, timerMs int64) error {
	const batch = 2000
	for lo := from; lo < to; lo += batch {
		hi := min(lo+batch, to)
		rs := make([]*kgo.Record, 0, hi-lo)
		for seq := lo; seq < hi; seq++ {
			v, err := e.serde.Encode(ctx, e.input, events.Tick{Seq: int64(seq), TimerMs: timerMs})
			if err != nil {
				return err
			}
			key := e.key(seq)
			rs = append(rs, &kgo.Record{Topic: e.input, Key: []byte(key), Value: v, Headers: event.New(events.TickType, "test", key).Headers()})
		}
		if err := e.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			return fmt.Errorf("produce ticks %d-%d: %w", lo, hi, err)
		}
	}
	return nil
}

// output is what the output topic holds for one input.
type output struct {
	seqs   map[int64]int // outputs per input seq
	timers map[int64]int // of which fired by a timer
	total  int
}

// outputs reads the output topic, read_committed, until it holds a
// distinct output for want inputs or timeout passes.
func (e *stepEnv) outputs(want int, timeout time.Duration) output {
	e.t.Helper()
	cl := newClient(e.t, e.brokers, kgo.ConsumeTopics(e.output), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	out := output{seqs: map[int64]int{}, timers: map[int64]int{}}
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	var derr error
	for len(out.seqs) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			_, v, err := e.serde.Decode(ctx, r.Value)
			if err != nil {
				derr = err
				return
			}
			c := v.(events.Counted)
			out.seqs[c.Seq]++
			if c.Timer {
				out.timers[c.Seq]++
			}
			out.total++
		})
		if derr != nil {
			e.t.Fatal(derr)
		}
	}
	// Late duplicates would show now.
	lctx, lcancel := context.WithTimeout(e.t.Context(), time.Second)
	cl.PollFetches(lctx).EachRecord(func(r *kgo.Record) {
		if _, v, err := e.serde.Decode(lctx, r.Value); err == nil {
			c := v.(events.Counted)
			out.seqs[c.Seq]++
			if c.Timer {
				out.timers[c.Seq]++
			}
			out.total++
		}
	})
	lcancel()
	return out
}

// check checks one output per input seq in [0, n) (at least one if
// !exactlyOnce).
func (o output) check(t *testing.T, n int, exactlyOnce bool) {
	t.Helper()
	var missing, dup []int
	for seq := range n {
		switch c := o.seqs[int64(seq)]; {
		case c == 0:
			missing = append(missing, seq)
		case c > 1 && exactlyOnce:
			dup = append(dup, seq)
		}
	}
	if len(missing) > 0 || len(dup) > 0 {
		t.Fatalf("%d inputs have no output (first %v), %d have more than one (first %v); %d outputs in all",
			len(missing), head(missing), len(dup), head(dup), o.total)
	}
	if exactlyOnce && o.total != n {
		t.Fatalf("%d outputs for %d inputs", o.total, n)
	}
}

func head(xs []int) []int { return xs[:min(len(xs), 10)] }

// changelogCounts reads the step's changelog (read_committed) to its end and
// returns each instance's count in its latest record.
// changelogCounts reads the changelog: the latest count of each instance,
// and the history of every key (for the diagnosis of a wrong count).
func (e *stepEnv) changelogCounts() (map[string]int64, changelogHistory) {
	e.t.Helper()
	topic := state.ChangelogTopic(e.app, "count")
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		e.t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl := newClient(e.t, e.brokers, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	latest := map[string][]byte{}
	hist := changelogHistory{counts: map[string][]string{}, progress: map[int32][]string{}, partition: map[string]int32{}}
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("read changelog %s: %v (partitions left: %v)", topic, ctx.Err(), left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() || len(r.Key) == 0 {
				return
			}
			switch r.Key[0] {
			case state.KindInstance:
				id := string(r.Key[1:])
				latest[id] = r.Value
				hist.partition[id] = r.Partition
				hist.counts[id] = append(hist.counts[id], fmt.Sprintf("@%d:%s", r.Offset, countOf(r.Value)))
			case state.KindInputOffset:
				pr, err := state.DecodeProgress(r.Value)
				hist.progress[r.Partition] = append(hist.progress[r.Partition], fmt.Sprintf("@%d:next=%d,done=%d(%v)", r.Offset, pr.Next, len(pr.Done), err))
			}
		})
	}
	out := map[string]int64{}
	for id, v := range latest {
		inst, err := state.DecodeInstance(v)
		if err != nil {
			e.t.Fatal(err)
		}
		var c struct{ N int64 }
		if err := json.Unmarshal(inst.State, &c); err != nil {
			e.t.Fatal(err)
		}
		out[id] = c.N
	}
	return out, hist
}

// changelogHistory is every version of the changelog's keys, in order.
type changelogHistory struct {
	counts    map[string][]string // per instance: @offset:count
	progress  map[int32][]string  // per partition: @offset:next,done
	partition map[string]int32
}

// countOf is the count a changelog value holds, for the history.
func countOf(v []byte) string {
	if v == nil {
		return "deleted"
	}
	inst, err := state.DecodeInstance(v)
	if err != nil {
		return err.Error()
	}
	var c struct{ N int64 }
	if err := json.Unmarshal(inst.State, &c); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d/seen=%d", c.N, len(inst.Seen))
}

// awaitCounts waits, while the step still runs, until the changelog holds
// the state of n inputs. Outputs alone do not say the state is complete:
// under at-least-once a process killed after its outputs but before its
// commit leaves its successor to handle those records again, and stopping
// that one as soon as every output is seen lost what it had yet to redo.
// checkCounts, after the stop, then checks the state.
func (e *stepEnv) awaitCounts(n int, timeout time.Duration) {
	e.t.Helper()
	want := map[string]int64{}
	for seq := range n {
		want[e.key(seq)]++
	}
	eventually(e.t, timeout, "the changelog holds the state of every input", func() (bool, string) {
		got, _ := e.changelogCounts()
		wrong := 0
		for k, w := range want {
			if got[k] != w {
				wrong++
			}
		}
		return wrong == 0, fmt.Sprintf("%d of %d instances short", wrong, len(want))
	})
}

// checkCounts checks the changelog's state against n inputs (plus extra per
// listed key).
func (e *stepEnv) checkCounts(n int, extra map[string]int64) {
	e.t.Helper()
	want := map[string]int64{}
	for seq := range n {
		want[e.key(seq)]++
	}
	for k, v := range extra {
		want[k] += v
	}
	got, hist := e.changelogCounts()
	var wrong []string
	for k, w := range want {
		if got[k] != w {
			wrong = append(wrong, fmt.Sprintf("%s=%d (want %d)", k, got[k], w))
		}
	}
	if len(wrong) > 0 || len(got) != len(want) {
		slices.Sort(wrong)
		for _, w := range wrong[:min(len(wrong), 3)] {
			id, _, _ := strings.Cut(w, "=")
			p := hist.partition[id]
			e.t.Logf("history of %s (partition %d): %v", id, p, hist.counts[id])
			e.t.Logf("progress of partition %d: %v", p, hist.progress[p])
		}
		e.t.Fatalf("state of %d instances wrong (%d instances in the changelog, want %d): %v", len(wrong), len(got), len(want), wrong[:min(len(wrong), 10)])
	}
}

// countProc is one countstep process.
type countProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	metrics string // URL
	done    chan struct{}
}

func (e *stepEnv) start(name, dir, guarantee, protocol string, extra ...string) *countProc {
	e.t.Helper()
	args := []string{
		"--brokers", strings.Join(e.brokers, ","), "--app", e.app, "--input", e.input, "--output", e.output,
		"--state-dir", dir, "--guarantee", guarantee, "--group-protocol", protocol, "--log-level", "info",
	}
	args = append(args, extra...)
	if protocol == "classic" {
		args = append(args, "--session-timeout", stepSession)
	}
	p := &countProc{name: name, logPath: filepath.Join(e.logs, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	p.cmd = exec.Command(e.bin, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "countstep: metrics on "); ok {
				addr <- u
			}
			fmt.Fprintln(logf, line)
		}
		_, _ = io.Copy(logf, stderr)
		_ = p.cmd.Wait()
	}()
	select {
	case p.metrics = <-addr:
	case <-p.done:
		e.t.Fatalf("%s exited at start:\n%s", name, p.tail(20))
	case <-time.After(30 * time.Second):
		e.t.Fatalf("%s did not start:\n%s", name, p.tail(20))
	}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p
}

// kill is kill -9.
func (p *countProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop is SIGTERM, a clean shutdown.
func (p *countProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM:\n%s", p.name, code, p.tail(30))
		}
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("%s did not stop within 30 s of SIGTERM:\n%s", p.name, p.tail(30))
	}
}

func (p *countProc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// metric sums the samples of a metric the process serves; -1 if it cannot
// be read.
func (p *countProc) metric(name string) float64 { return p.metricWhere(name, "") }

// metricWhere sums the samples of a metric whose labels contain label
// (any, when empty); -1 if it cannot be read.
func (p *countProc) metricWhere(name, label string) float64 {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, s := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(s, name+" ") && !strings.HasPrefix(s, name+"{") || !strings.Contains(s, label) {
			continue
		}
		if v, err := strconv.ParseFloat(s[strings.LastIndexByte(s, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// waitCommitted waits until what the process has handled so far is
// committed: a commit ended after this call, or the process has been idle
// for a second (an idle step commits its pending work at the next interval).
// Aborted transactions (a rebalance) do not count: commit_seconds observes
// them too.
func (p *countProc) waitCommitted(t *testing.T, timeout time.Duration) {
	t.Helper()
	committed := func() float64 {
		return p.metric("troupe_step_commit_seconds_count") - p.metric("troupe_step_transaction_aborts_total")
	}
	commits := committed()
	events := p.metric("troupe_step_events_total")
	idleSince := time.Now()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		c, e := committed(), p.metric("troupe_step_events_total")
		if c > commits {
			return
		}
		if e != events {
			events, idleSince = e, time.Now()
		} else if c > 0 && time.Since(idleSince) > time.Second {
			return
		}
	}
	t.Fatalf("nothing committed within %s (commits %v, events %v)", timeout, commits, events)
}

// awaitMetric waits until the process's metric reaches at least v, and
// says whether it did.
func (p *countProc) awaitMetric(name string, v float64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.metric(name) >= v {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// waitMetric waits until the process's metric reaches at least v.
func (p *countProc) waitMetric(t *testing.T, name string, v float64, timeout time.Duration) {
	t.Helper()
	if p.awaitMetric(name, v, timeout) {
		return
	}
	t.Fatalf("%s: %s = %v after %s, want >= %v\n%s", p.name, name, p.metric(name), timeout, v, p.tail(20))
}

func TestStepCount(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"exactly_once", "at_least_once"} {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			e := newStepEnv(t)
			n := stepEvents(t)
			start := time.Now()
			if err := e.produce(t.Context(), 0, n, 0); err != nil {
				t.Fatal(err)
			}
			produced := time.Since(start)
			dir := t.TempDir()
			p := e.start("count", dir, g, "") // KIP-848 if the broker offers it
			start = time.Now()
			out := e.outputs(n, 3*time.Minute)
			took := time.Since(start)
			e.awaitCounts(n, time.Minute)
			p.stop(t)
			t.Logf("%s: %d events produced in %s, processed in %s (%.0f events/s, one process, tests running beside it)",
				g, n, produced.Round(time.Millisecond), took.Round(time.Millisecond), float64(n)/took.Seconds())
			out.check(t, n, g == "exactly_once")
			e.checkCounts(n, nil)
		})
	}
}

// A step whose handler waits 20 ms on I/O, over a backlog whose poll
// takes far longer than the transaction timeout one record after another
// (2,000 x 20 ms = 40 s against 10 s): every input is answered exactly
// once, and no transaction is aborted (the intervals are time-bounded;
// before they were, the broker rolled every one back and the step never
// made progress).
func TestStepSlowHandlerBacklog(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"exactly_once", "at_least_once"} {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			e := newStepEnv(t)
			const n = 2000
			if err := e.produce(t.Context(), 0, n, 0); err != nil {
				t.Fatal(err)
			}
			p := e.start("count", t.TempDir(), g, "", "--handler-delay", "20ms")
			start := time.Now()
			out := e.outputs(n, 3*time.Minute)
			took := time.Since(start)
			aborts := p.metric("troupe_step_transaction_aborts_total")
			e.awaitCounts(n, time.Minute)
			p.stop(t)
			t.Logf("%s: %d inputs with a 20 ms handler in %s (%.0f events/s at the default concurrency)", g, n, took.Round(time.Millisecond), n/took.Seconds())
			out.check(t, n, g == "exactly_once")
			e.checkCounts(n, nil)
			if aborts != 0 {
				t.Fatalf("%v transactions aborted, want 0\n%s", aborts, p.tail(20))
			}
		})
	}
}

func TestStepKillRestart(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"exactly_once", "at_least_once"} {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			e := newStepEnv(t)
			n := stepEvents(t)
			if err := e.produce(t.Context(), 0, n/2, 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			// At concurrency 64 with a handler that waits, so that calls
			// of many instances are in flight at every kill.
			conc := []string{"--concurrency", "64", "--handler-delay", "1ms"}
			p := e.start("count-0", dir, g, "classic", conc...)

			// The second half arrives while the process is killed and
			// restarted.
			produced := make(chan error, 1)
			go func() {
				var err error
				for lo := n / 2; lo < n && err == nil; lo += n / 40 {
					err = e.produce(t.Context(), lo, min(lo+n/40, n), 0)
					time.Sleep(500 * time.Millisecond)
				}
				produced <- err
			}()
			for i := 1; i <= 3; i++ {
				// Kill at a random point once the process is processing
				// (a restart waits out the dead one's session first).
				p.awaitMetric("troupe_step_events_total", 1, 20*time.Second)
				time.Sleep(time.Duration(300+mrand.IntN(1500)) * time.Millisecond)
				processed := p.metric("troupe_step_events_total")
				p.kill()
				t.Logf("kill -9 #%d after %v events handled by that process", i, processed)
				if i == 2 {
					// Lost disk: the restart restores everything from the changelog.
					if err := os.RemoveAll(dir); err != nil {
						t.Fatal(err)
					}
				}
				p = e.start(fmt.Sprintf("count-%d", i), dir, g, "classic", conc...)
			}
			if err := <-produced; err != nil {
				t.Fatal(err)
			}
			out := e.outputs(n, 3*time.Minute)
			e.awaitCounts(n, time.Minute)
			p.stop(t)
			out.check(t, n, g == "exactly_once")
			e.checkCounts(n, nil)
			t.Logf("%s: %d inputs, %d outputs after 3 kills", g, n, out.total)
		})
	}
}

func TestStepRebalanceRestores(t *testing.T) {
	t.Parallel()
	e := newStepEnv(t)
	n := stepEvents(t)
	ps := []*countProc{
		e.start("a", t.TempDir(), "exactly_once", "classic"),
		e.start("b", t.TempDir(), "exactly_once", "classic"),
		e.start("c", t.TempDir(), "exactly_once", "classic"),
	}
	if err := e.produce(t.Context(), 0, n/2, 0); err != nil {
		t.Fatal(err)
	}
	// Kill one while it is busy; the others take its partitions and must
	// restore them from the changelog.
	ps[2].waitMetric(t, "troupe_step_events_total", float64(n/20), time.Minute)
	// Let it commit a few intervals after that (however slow the machine
	// is), so that its partitions have committed changelog records to
	// restore.
	ps[2].waitCommitted(t, time.Minute)
	ps[2].kill()
	if err := e.produce(t.Context(), n/2, n, 0); err != nil {
		t.Fatal(err)
	}
	out := e.outputs(n, 3*time.Minute)
	e.awaitCounts(n, time.Minute)
	restored := ps[0].metric("troupe_step_restore_records_total") + ps[1].metric("troupe_step_restore_records_total")
	ps[0].stop(t)
	ps[1].stop(t)
	if restored <= 0 {
		t.Fatalf("the new owners restored %v records", restored)
	}
	out.check(t, n, true)
	e.checkCounts(n, nil)
	t.Logf("survivors restored %v changelog records", restored)
}

func TestStepTimers(t *testing.T) {
	t.Parallel()
	const timers = 16
	sendTimers := func(e *stepEnv, from int) {
		t.Helper()
		// Seqs from..from+timers-1 go to instances k-0000.. on every partition.
		if err := e.produce(t.Context(), from, from+timers, 3000); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("kill and restart", func(t *testing.T) {
		t.Parallel()
		e := newStepEnv(t)
		dir := t.TempDir()
		p := e.start("a", dir, "exactly_once", "classic")
		if err := e.produce(t.Context(), 0, 100, 0); err != nil {
			t.Fatal(err)
		}
		e.outputs(100, time.Minute) // running
		sendTimers(e, 100)
		p.waitMetric(t, "troupe_step_events_total", 100+timers, 30*time.Second)
		p.kill() // before the timers are due
		p = e.start("a-again", dir, "exactly_once", "classic")
		out := e.outputs(100+timers, time.Minute)
		p.stop(t)
		out.check(t, 100+timers, true)
		if len(out.timers) != timers {
			t.Fatalf("%d timers fired, want %d", len(out.timers), timers)
		}
	})
	t.Run("partition moves", func(t *testing.T) {
		t.Parallel()
		e := newStepEnv(t)
		a := e.start("a", t.TempDir(), "exactly_once", "classic")
		b := e.start("b", t.TempDir(), "exactly_once", "classic")
		// Produce until both hold partitions (both have handled events).
		sent := 0
		deadline := time.Now().Add(time.Minute)
		for a.metric("troupe_step_events_total") <= 0 || b.metric("troupe_step_events_total") <= 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the two processes never both held partitions:\n%s\n%s", a.tail(20), b.tail(20))
			}
			if err := e.produce(t.Context(), sent, sent+50, 0); err != nil {
				t.Fatal(err)
			}
			sent += 50
			e.outputs(sent, time.Minute)
		}
		sendTimers(e, sent)
		time.Sleep(time.Second)
		aSet := a.metric("troupe_step_events_total")
		a.kill() // its timers now fire on b, late
		out := e.outputs(sent+timers, time.Minute)
		fired := b.metric("troupe_step_timers_fired_total")
		b.stop(t)
		out.check(t, sent+timers, true)
		if len(out.timers) != timers || fired != timers {
			t.Fatalf("%d timers fired (%v by the survivor), want %d (a had handled %v events)", len(out.timers), fired, timers, aSet)
		}
	})
}
