package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/cmd/countstep/events"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
)

// Recovery against the real broker (README: Writing a step, issue 7): a poison record
// goes to the step's DLQ and the partition moves on; an instance whose
// handler always fails gets a dead letter while its later events are
// parked and the other instances flow; after the fix, `troupe dlq replay`
// runs the dead letter and then the parked events, in order, each once, and
// a second replay changes nothing.

// recoveryRetry is a quick retry policy for countstep: 3 attempts.
var recoveryRetry = []string{"--retry-attempts", "3", "--retry-backoff", "10ms", "--retry-max-backoff", "50ms"}

func TestRecoveryPoisonRecord(t *testing.T) {
	const n = 2000
	e := newStepEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	p := e.start("count-0", filepath.Join(t.TempDir(), "state"), "exactly_once", "", recoveryRetry...)

	if err := e.produce(ctx, 0, n/2, 0); err != nil {
		t.Fatal(err)
	}
	m := event.New(events.TickType, "test", "poison")
	poison := &kgo.Record{Topic: e.input, Key: []byte("poison"), Value: []byte("\x00\x00\x00\x00\x07 not avro"), Headers: m.Headers()}
	if err := e.cl.ProduceSync(ctx, poison).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.produce(ctx, n/2, n, 0); err != nil {
		t.Fatal(err)
	}

	e.outputs(n, time.Minute).check(t, n, true)
	p.waitMetric(t, "troupe_step_dead_letters_total", 1, 10*time.Second)
	if got := p.metric("troupe_step_retries_total"); got != 0 {
		t.Errorf("an undecodable record was retried %v times", got)
	}
	// The DLQ is written in transactions: read it as `troupe dlq` does.
	q, err := dlq.Open(ctx, replayConfig(), "count", e.app+".count.dlq", e.app+".count.retry")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var dls []dlq.DeadLetter
	if err := q.Scan(ctx, dlq.All(), func(d dlq.DeadLetter) error { dls = append(dls, d); return d.Malformed }); err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	d, dl := dls[0], dls[0].Record
	t.Logf("dead letter: %s/%d@%d from %s, %d attempt(s): %s", dl.Topic, dl.Partition, dl.Offset, d.Source, d.Attempts, d.Error)
	if d.Source != dlq.Of(poison) || d.Step != "count" || d.Attempts != 1 || !strings.Contains(d.Error, "decode") || time.Since(d.FailedAt) > time.Minute {
		t.Fatalf("provenance %+v, want the poison record at %s, step count, 1 attempt, a decode error", d, dlq.Of(poison))
	}
	if dl.Partition != poison.Partition || string(dl.Key) != "poison" || string(dl.Value) != string(poison.Value) || d.Event.ID != m.ID || d.Event.Type != events.TickType {
		t.Fatalf("dead letter %s/%d key %q value %q event %+v: the record's partition, key, value or headers changed", dl.Topic, dl.Partition, dl.Key, dl.Value, d.Event)
	}
	if got := p.metric("troupe_step_parked_events"); got != 0 {
		t.Errorf("parked %v: nothing came after the poison on its instance", got)
	}
	p.stop(t)
}

// A handler that fails twice for one order, then succeeds: no dead letter,
// two retries, every tick answered once.
func TestRecoveryRetryThenSucceed(t *testing.T) {
	const n = 1000 // k-0003 gets tick 3 alone
	e := newStepEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	p := e.start("count-flaky", filepath.Join(t.TempDir(), "state"), "exactly_once", "", append([]string{"--flaky-keys", "k-0003"}, recoveryRetry...)...)
	if err := e.produce(ctx, 0, n, 0); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, e.countsBySeq(n, time.Minute), n)
	if got := p.metric("troupe_step_retries_total"); got != 2 {
		t.Errorf("retries %v, want 2", got)
	}
	if got := p.metric("troupe_step_dead_letters_total"); got != 0 {
		t.Errorf("dead letters %v, want 0", got)
	}
	p.stop(t)
	e.checkCounts(n, nil)
}

func TestRecoveryReplayAfterFix(t *testing.T) {
	const n = 3000 // k-0007 gets ticks 7, 1007 and 2007
	e := newStepEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	topo := e.topologyFile()
	dir := filepath.Join(t.TempDir(), "state")
	p := e.start("count-broken", dir, "exactly_once", "", append([]string{"--fail-keys", "k-0007"}, recoveryRetry...)...)
	if err := e.produce(ctx, 0, n, 0); err != nil {
		t.Fatal(err)
	}

	// Every instance but k-0007 flows; k-0007's first tick is a dead letter
	// after 3 attempts, and its two later ticks are parked.
	counts := e.countsBySeq(n-3, time.Minute)
	for _, seq := range []int64{7, 1007, 2007} {
		if len(counts[seq]) != 0 {
			t.Fatalf("tick %d of the failing instance was answered: %v", seq, counts[seq])
		}
	}
	p.waitMetric(t, "troupe_step_parked_events", 2, 10*time.Second)
	p.waitMetric(t, "troupe_step_dead_letters_total", 1, 10*time.Second)
	// A transaction aborted by the group settling at start may have
	// dead-lettered it once more (and thrown that away): 3 attempts each.
	if got, dls := p.metric("troupe_step_retries_total"), p.metric("troupe_step_dead_letters_total"); got != 2*dls {
		t.Errorf("retries %v for %v dead-letterings, want 2 each (3 attempts)", got, dls)
	}
	out, err := runTroupe(t, ctx, "dlq", "list", "--topology", topo, "--step", "count")
	if err != nil || !strings.Contains(out, "k-0007") || !strings.Contains(out, "set to fail") || !strings.Contains(out, "1 dead letter(s)") {
		t.Fatalf("troupe dlq list: %v\n%s", err, out)
	}
	t.Logf("troupe dlq list:\n%s", out)

	// The fix is deployed: the parking survived the restart.
	p.stop(t)
	p = e.start("count-fixed", dir, "exactly_once", "", recoveryRetry...)
	p.waitMetric(t, "troupe_step_parked_events", 2, 30*time.Second)

	out, err = runTroupe(t, ctx, "dlq", "replay", "--topology", topo, "--step", "count", "--all")
	if err != nil {
		t.Fatalf("troupe dlq replay: %v\n%s", err, out)
	}
	t.Logf("troupe dlq replay:\n%s", out)
	counts = e.countsBySeq(n, time.Minute)
	for i, seq := range []int64{7, 1007, 2007} { // in order: counts 1, 2, 3
		if want := []int64{int64(i + 1)}; fmt.Sprint(counts[seq]) != fmt.Sprint(want) {
			t.Fatalf("tick %d of k-0007 answered with counts %v, want %v", seq, counts[seq], want)
		}
	}
	checkOnce(t, counts, n)
	waitGauge(t, p, "troupe_step_parked_events", 0)

	// A second replay is refused (the dead letter is settled); forced, it
	// is a duplicate: nothing changes.
	if out, err := runTroupe(t, ctx, "dlq", "replay", "--topology", topo, "--step", "count", "--all"); err != nil || !strings.Contains(out, "settled already") {
		t.Fatalf("second troupe dlq replay: %v, want nothing replayed as settled already\n%s", err, out)
	}
	dups := p.metricWhere("troupe_step_events_total", `outcome="duplicate"`)
	if out, err := runTroupe(t, ctx, "dlq", "replay", "--topology", topo, "--step", "count", "--all", "--force"); err != nil {
		t.Fatalf("forced troupe dlq replay: %v\n%s", err, out)
	}
	eventually(t, 20*time.Second, "the second replay is dropped as a duplicate", func() (bool, string) {
		got := p.metricWhere("troupe_step_events_total", `outcome="duplicate"`)
		return got > dups, fmt.Sprintf("duplicates %v (were %v)", got, dups)
	})
	checkOnce(t, e.countsBySeq(n, 5*time.Second), n)
	p.stop(t)
	e.checkCounts(n, nil)
}

// topologyFile writes a topology for the count step of e, for the CLI
// (`troupe dlq --topology`): it names the step's DLQ and retry topic.
func (e *stepEnv) topologyFile() string {
	e.t.Helper()
	yaml := fmt.Sprintf(`app: %s
saga: recovery
namespace: troupe.it
key: seq
trigger: Tick
completes_on: [Counted]
partitions: %d
topics:
  - {name: %s, events: [Tick]}
  - {name: %s, events: [Counted]}
steps:
  - {name: count, on: [Tick], emits: [Counted]}
`, e.app, stepPartitions, e.input, e.output)
	f := filepath.Join(e.t.TempDir(), "recovery.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// countsBySeq reads the output topic (read_committed) until it answers want
// distinct ticks or timeout passes, and returns the counts answered per
// tick, in output order.
func (e *stepEnv) countsBySeq(want int, timeout time.Duration) map[int64][]int64 {
	e.t.Helper()
	cl := newClient(e.t, e.brokers, kgo.ConsumeTopics(e.output), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	out := map[int64][]int64{}
	read := func(ctx context.Context) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			_, v, err := e.serde.Decode(ctx, r.Value)
			if err != nil {
				e.t.Errorf("output %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
				return
			}
			c := v.(events.Counted)
			out[c.Seq] = append(out[c.Seq], c.Count)
		})
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	for len(out) < want && ctx.Err() == nil {
		read(ctx)
	}
	lctx, lcancel := context.WithTimeout(e.t.Context(), time.Second) // late duplicates
	read(lctx)
	lcancel()
	return out
}

// checkOnce checks one answer per tick in [0, n).
func checkOnce(t *testing.T, counts map[int64][]int64, n int) {
	t.Helper()
	var missing, dup []int64
	for seq := range int64(n) {
		switch len(counts[seq]) {
		case 0:
			missing = append(missing, seq)
		case 1:
		default:
			dup = append(dup, seq)
		}
	}
	if len(missing)+len(dup) > 0 || len(counts) != n {
		t.Fatalf("%d ticks unanswered (first %v), %d answered more than once (first %v), %d answered", len(missing), missing[:min(10, len(missing))], len(dup), dup[:min(10, len(dup))], len(counts))
	}
}

// waitGauge waits until a gauge of the process is v.
func waitGauge(t *testing.T, p *countProc, name string, v float64) {
	t.Helper()
	eventually(t, 20*time.Second, name+" = "+strconv.FormatFloat(v, 'f', -1, 64), func() (bool, string) {
		got := p.metric(name)
		return got == v, fmt.Sprintf("%s = %v", name, got)
	})
}

// TestRecoveryHeldRecordSurvivesKill kills the step (kill -9) while a
// partition holds at a failing record for its backoff. The transactions
// committed meanwhile carried the other partitions' work and the held
// partition's offsets up to the failing record, not past it: the fixed step
// answers every tick, each once.
func TestRecoveryHeldRecordSurvivesKill(t *testing.T) {
	const n = 3000
	e := newStepEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "state")
	p := e.start("count-holding", dir, "exactly_once", "", "--fail-keys", "k-0007", "--retry-attempts", "10", "--retry-backoff", "1m", "--retry-max-backoff", "1m")
	if err := e.produce(ctx, 0, n, 0); err != nil {
		t.Fatal(err)
	}
	p.waitMetric(t, "troupe_step_retries_total", 1, 30*time.Second)
	held := e.countsBySeq(n/2, 30*time.Second)
	if len(held) < n/2 {
		t.Fatalf("%d ticks answered while one partition holds; the others should flow", len(held))
	}
	time.Sleep(500 * time.Millisecond) // a few more commits while it holds
	p.kill()

	p = e.start("count-fixed", dir, "exactly_once", "", recoveryRetry...)
	counts := e.countsBySeq(n, time.Minute)
	t.Logf("%d ticks answered before the kill, %d after", len(held), len(counts)-len(held))
	checkOnce(t, counts, n)
	p.stop(t)
	e.checkCounts(n, nil)
}
