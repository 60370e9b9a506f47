package step

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/replay"
)

func TestRetryPolicyBackoff(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {60, time.Second}} {
		if got := p.Backoff(tc.attempt); got != tc.want {
			t.Errorf("Backoff(%d) = %s, want %s", tc.attempt, got, tc.want)
		}
	}
	d := RetryPolicy{}.withDefaults()
	if d.Attempts != 5 || d.InitialBackoff != 100*time.Millisecond || d.MaxBackoff != 5*time.Second || d.Jitter != 0.2 {
		t.Fatalf("defaults %+v", d)
	}
	for range 100 {
		if w := d.jittered(d.Backoff(3)); w < 320*time.Millisecond || w > 400*time.Millisecond {
			t.Fatalf("wait(3) with 20%% jitter = %s, want within [320ms, 400ms]", w)
		}
	}
	if w := (RetryPolicy{Jitter: -1}).withDefaults().jittered(200 * time.Millisecond); w != 200*time.Millisecond {
		t.Fatalf("wait without jitter = %s", w)
	}
	for _, bad := range []RetryPolicy{{Attempts: -1}, {InitialBackoff: -1}, {InitialBackoff: time.Minute, MaxBackoff: time.Second}, {Jitter: 1.5}} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

func TestParkEncodings(t *testing.T) {
	h := &head{status: headDraining, next: 9, last: 7, eventID: "ev-1", eventType: "troupe.test.Tick",
		failed: dlq.Coordinates{Topic: "ticks", Partition: 3, Offset: 42}, failedAt: time.Unix(0, 1234567)}
	got, err := decodeHead(h.append(nil))
	if err != nil || *got != *h {
		t.Fatalf("head round trip: %+v %v, want %+v", got, err, h)
	}
	r := &kgo.Record{Topic: "ticks", Partition: 2, Offset: 17, Key: []byte("k"), Value: []byte{0, 1, 2},
		Timestamp: time.UnixMilli(1700000000123), Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("x")}, {Key: dlq.HeaderUnparked, Value: []byte("4")}}}
	back, err := decodeParked(appendParked(nil, r))
	if err != nil {
		t.Fatal(err)
	}
	if back.Topic != r.Topic || back.Partition != 2 || back.Offset != 17 || string(back.Key) != "k" || string(back.Value) != string(r.Value) ||
		!back.Timestamp.Equal(r.Timestamp) || len(back.Headers) != 1 || back.Headers[0].Key != "ce_id" {
		t.Fatalf("parked round trip: %+v", back)
	}
	r.Value = nil
	if back, err = decodeParked(appendParked(nil, r)); err != nil || back.Value != nil {
		t.Fatalf("nil value round trip: %v %v", back.Value, err)
	}
	for n := range len(appendParked(nil, r)) {
		if _, err := decodeParked(appendParked(nil, r)[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	id, seq, err := parseParkKey(parkKeyFor("i-1", 5))
	if err != nil || id != "i-1" || seq != 5 {
		t.Fatalf("parseParkKey: %q %d %v", id, seq, err)
	}
}

func parkKeyFor(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(parkPrefix(id), seq)
}

// switchStep is a counting step whose handler fails as fail says, and
// records every tick it handled successfully.
type switchStep struct {
	mu      sync.Mutex
	fail    func(key string, n int64) error
	handled map[string][]int64
}

func (w *switchStep) setFail(f func(key string, n int64) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail = f
}

func (w *switchStep) of(key string) []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.handled[key])
}

func (w *switchStep) step(app string) *Step[counter] {
	w.handled = map[string][]int64{}
	s := New[counter](app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[counter], ev Tick) error {
		w.mu.Lock()
		fail := w.fail
		w.mu.Unlock()
		if fail != nil {
			if err := fail(c.Key(), ev.N); err != nil {
				return err
			}
		}
		st, _ := c.State()
		st.Count++
		c.SetState(st)
		if err := c.Emit("counted", Counted{Count: st.Count, N: ev.N}); err != nil {
			return err
		}
		w.mu.Lock()
		w.handled[c.Key()] = append(w.handled[c.Key()], ev.N)
		w.mu.Unlock()
		return nil
	})
	return s
}

// fastRetry retries quickly, so that tests do not wait.
func fastRetry(attempts int) RetryPolicy {
	return RetryPolicy{Attempts: attempts, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

// waitFor polls cond every 20 ms for up to timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not so after %s: %s", what, timeout, why)
}

// metricIs is a waitFor condition on a counter or gauge.
func metricIs(t *testing.T, name string, c prometheus.Collector, want float64) func() (bool, string) {
	return func() (bool, string) {
		got := counterValue(t, c)
		return got == want, fmt.Sprintf("%s = %v, want %v", name, got, want)
	}
}

// sendRetry writes what dlq.Replay or dlq.Discard makes of the dead letter
// rec into the step's retry topic, as `troupe dlq replay|discard` does.
func (e *env) sendRetry(rec *kgo.Record, build func(dlq.DeadLetter, string) *kgo.Record) {
	e.t.Helper()
	d, err := dlq.Parse(rec)
	if err != nil {
		e.t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(e.t.Context(), build(d, e.app+".count.retry")).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// ticksOf lists the tick numbers of instance key's outputs, in output order.
func ticksOf(outs []*counted, key string) []int64 {
	var ns []int64
	for _, o := range outs {
		if o.key == key {
			ns = append(ns, o.N)
		}
	}
	return ns
}

// ticksFor lists the ticks 0..n-1 that go to key, over instances.
func ticksFor(key string, n, instances int) []int64 {
	var ns []int64
	for i := range n {
		if fmt.Sprintf("i-%03d", i%instances) == key {
			ns = append(ns, int64(i))
		}
	}
	return ns
}

func header(r *kgo.Record, k string) string {
	v, _ := event.Header(r, k)
	return v
}

func TestRetryThenSucceed(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances = 40, 8
			e := newEnv(t, 2)
			var failures atomic.Int32
			w := &switchStep{fail: func(_ string, n int64) error {
				if n == 13 && failures.Add(1) <= 2 {
					return errors.New("dependency down")
				}
				return nil
			}}
			cfg := e.config(t.TempDir(), g)
			cfg.Retry = fastRetry(5)
			r := start(t, w.step(e.app), cfg)
			e.produce(0, n, instances)
			outs := e.counted(n, 10*time.Second)
			checkOutputs(t, e, outs, wantCounts(n, instances), g == ExactlyOnce)
			if got := counterValue(t, r.rt.m.retries); got != 2 {
				t.Fatalf("retries metric %v, want 2", got)
			}
			if got := counterValue(t, r.rt.m.deadLetters); got != 0 {
				t.Fatalf("dead letters %v", got)
			}
			if got := e.consume(e.app+".count.dlq", 1, 300*time.Millisecond); len(got) != 0 {
				t.Fatalf("%d dead letters", len(got))
			}
			if got, want := w.of("i-005"), ticksFor("i-005", n, instances); !slices.Equal(got, want) {
				t.Fatalf("i-005 handled %v, want %v", got, want)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDeadLetterParkReplay is the life of a dead letter: an instance's event
// keeps failing, goes to the DLQ with its provenance, the instance's later
// events are parked while the other instances flow, the handler is fixed,
// the dead letter is replayed, and the parked events run in order, each
// once; a second replay changes nothing.
func TestDeadLetterParkReplay(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances = 80, 8 // i-005 gets 5, 13, 21, ..., 77
			e := newEnv(t, 4)
			broken := errors.New("cannot handle 13")
			w := &switchStep{fail: func(key string, n int64) error {
				if key == "i-005" && n == 13 {
					return broken
				}
				return nil
			}}
			dir := t.TempDir()
			cfg := e.config(dir, g)
			cfg.Retry = fastRetry(3)
			r := start(t, w.step(e.app), cfg)
			e.produce(0, n, instances)

			// Everything but i-005 from tick 13 on: 9 of its 10 ticks wait.
			outs := e.counted(n-9, 10*time.Second)
			if len(outs) != n-9 {
				t.Fatalf("%d outputs, want %d", len(outs), n-9)
			}
			if got := ticksOf(outs, "i-005"); !slices.Equal(got, []int64{5}) {
				t.Fatalf("i-005 outputs for ticks %v, want [5]", got)
			}
			waitFor(t, 5*time.Second, "8 events parked", metricIs(t, "parked", r.rt.m.parked, 8))
			if got := counterValue(t, r.rt.m.retries); got != 2 {
				t.Fatalf("retries %v, want 2", got)
			}
			if got := counterValue(t, r.rt.m.deadLetters); got != 1 {
				t.Fatalf("dead letters %v, want 1", got)
			}

			dls := e.consume(e.app+".count.dlq", 1, 5*time.Second)
			if len(dls) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dls))
			}
			dl := dls[0]
			d, err := dlq.Parse(dl)
			if err != nil {
				t.Fatal(err)
			}
			src := e.consume("ticks", n, 5*time.Second)
			var orig *kgo.Record
			for _, s := range src {
				if string(s.Key) == "i-005" && s.Partition == d.Source.Partition && s.Offset == d.Source.Offset {
					orig = s
				}
			}
			if orig == nil || d.Source.Topic != "ticks" || d.Step != "count" || d.Attempts != 3 || !strings.Contains(d.Error, "cannot handle 13") ||
				time.Since(d.FailedAt) > time.Minute || dl.Partition != orig.Partition {
				t.Fatalf("dead letter %+v (in partition %d) does not name the failed record", d, dl.Partition)
			}
			if string(dl.Key) != "i-005" || string(dl.Value) != string(orig.Value) || header(dl, event.HeaderID) != header(orig, event.HeaderID) ||
				header(dl, event.HeaderType) != "troupe.test.Tick" {
				t.Fatalf("dead letter lost the record's key, value or headers: %+v", dl)
			}

			// A restart keeps the parking: it is state.
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if g == ExactlyOnce { // and so does a lost disk: it is in the changelog
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			cfg.Registerer = prometheus.NewRegistry()
			r = start(t, w.step(e.app), cfg)
			r.waitActive(t, 4, 10*time.Second)
			if got := counterValue(t, r.rt.m.parked); got != 8 {
				t.Fatalf("parked after restart %v, want 8", got)
			}

			// Fixed, then replayed: the parked events run after it, in order,
			// and events arriving meanwhile queue behind them.
			w.setFail(nil)
			e.sendRetry(dl, dlq.Replay)
			e.produce(n, 8, instances) // i-005 gets 85
			outs = e.counted(n+8, 10*time.Second)
			want := append(ticksFor("i-005", n, instances), 85)
			if got := ticksOf(outs, "i-005"); !slices.Equal(got, want) {
				t.Fatalf("i-005 outputs for ticks %v, want %v", got, want)
			}
			checkOutputs(t, e, outs, wantCounts(n+8, instances), g == ExactlyOnce)
			if g == ExactlyOnce && len(outs) != n+8 {
				t.Fatalf("%d outputs, want %d", len(outs), n+8)
			}
			if got := w.of("i-005"); !slices.Equal(got, want[1:]) { // 5 was handled before the restart
				t.Fatalf("i-005 handled %v after the replay, want %v", got, want[1:])
			}
			waitFor(t, 5*time.Second, "nothing parked", metricIs(t, "parked", r.rt.m.parked, 0))

			// A second replay: a duplicate, nothing more.
			dups := counterValue(t, r.rt.m.duplicate)
			e.sendRetry(dl, dlq.Replay)
			waitFor(t, 5*time.Second, "second replay dropped", func() (bool, string) {
				got := counterValue(t, r.rt.m.duplicate)
				return got > dups, fmt.Sprintf("duplicates %v", got)
			})
			// Read all that is there (consume then waits a moment more for
			// an extra one): a 1 s read of n+9 could stop short on a slow
			// machine.
			if outs := e.counted(n+8, 10*time.Second); len(outs) != n+8 && g == ExactlyOnce {
				t.Fatalf("%d outputs after a second replay, want %d", len(outs), n+8)
			}
			if got := w.of("i-005"); !slices.Equal(got, want[1:]) {
				t.Fatalf("i-005 handled %v after a second replay", got)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if got := counts(t, dir, e.app, 4)["i-005"]; got != 11 {
				t.Fatalf("count of i-005 = %d, want 11", got)
			}
		})
	}
}

func TestDiscardReleasesParked(t *testing.T) {
	const n, instances = 40, 4 // i-001 gets 1, 5, 9, ..., 37
	e := newEnv(t, 2)
	w := &switchStep{fail: func(key string, n int64) error {
		if key == "i-001" && n == 5 {
			return Permanent(errors.New("order is malformed"))
		}
		return nil
	}}
	cfg := e.config(t.TempDir(), ExactlyOnce)
	cfg.Retry = fastRetry(5)
	r := start(t, w.step(e.app), cfg)
	e.produce(0, n, instances)
	e.counted(n-9, 10*time.Second)
	waitFor(t, 5*time.Second, "parked", metricIs(t, "parked", r.rt.m.parked, 8))
	if got := counterValue(t, r.rt.m.retries); got != 0 {
		t.Fatalf("a permanent error was retried %v times", got)
	}
	dls := e.consume(e.app+".count.dlq", 1, 5*time.Second)
	if len(dls) != 1 || header(dls[0], dlq.HeaderAttempts) != "1" {
		t.Fatalf("dead letters %v, want one after 1 attempt", dls)
	}

	// A discard marker of another event changes nothing.
	other := *dls[0]
	other.Headers = slices.Clone(other.Headers)
	for i, h := range other.Headers {
		if h.Key == event.HeaderID {
			other.Headers[i].Value = []byte(event.NewID())
		}
	}
	e.sendRetry(&other, dlq.Discard)
	time.Sleep(300 * time.Millisecond)
	if got := counterValue(t, r.rt.m.parked); got != 8 {
		t.Fatalf("a discard of another event released the instance: parked %v", got)
	}

	e.sendRetry(dls[0], dlq.Discard)
	outs := e.counted(n-1, 10*time.Second)
	want := ticksFor("i-001", n, instances)
	want = slices.DeleteFunc(want, func(x int64) bool { return x == 5 })
	if got := ticksOf(outs, "i-001"); !slices.Equal(got, want) {
		t.Fatalf("i-001 outputs for %v, want %v (5 discarded)", got, want)
	}
	if len(outs) != n-1 {
		t.Fatalf("%d outputs, want %d", len(outs), n-1)
	}
	waitFor(t, 5*time.Second, "nothing parked", metricIs(t, "parked", r.rt.m.parked, 0))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestUndecodableGoesStraightToDLQ(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			e := newEnv(t, 2)
			cfg := e.config(t.TempDir(), g)
			r := start(t, countStep(e.app), cfg) // the default policy: 5 attempts
			e.produce(0, 20, 4)
			m := event.New("troupe.test.Tick", "test", "poison")
			garbage := []*kgo.Record{
				{Topic: "ticks", Key: []byte("poison"), Value: []byte("not avro at all"), Headers: m.Headers()},
				{Topic: "ticks", Value: []byte{0, 0, 0, 0, 99, 1, 2}}, // no key, unknown schema id
			}
			if err := e.cl.ProduceSync(t.Context(), garbage...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			e.produce(20, 20, 4)
			outs := e.counted(40, 10*time.Second)
			checkOutputs(t, e, outs, wantCounts(40, 4), g == ExactlyOnce)
			dls := e.consume(e.app+".count.dlq", 2, 5*time.Second)
			if len(dls) != 2 {
				t.Fatalf("%d dead letters, want 2", len(dls))
			}
			for _, dl := range dls {
				d, err := dlq.Parse(dl)
				want := "decode" // the keyless one fails before: it belongs to no instance
				if len(dl.Key) == 0 {
					want = "no key"
				}
				if err != nil || d.Attempts != 1 || !strings.Contains(d.Error, want) {
					t.Fatalf("dead letter %+v %v, want a failure (%s) after 1 attempt", d, err, want)
				}
			}
			if got := counterValue(t, r.rt.m.retries); got != 0 {
				t.Fatalf("retries %v, want 0", got)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHeldRecordSurvivesRestart stops the step while a record waits for its
// retry: the interval that ended committed the other partitions' work and
// its own partition's records before the failing one, but not the failing
// one nor those behind it, which the next run handles, each once.
func TestHeldRecordSurvivesRestart(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances = 200, 8
			e := newEnv(t, 4)
			w := &switchStep{fail: func(_ string, n int64) error {
				if n == 13 {
					return errors.New("slow dependency")
				}
				return nil
			}}
			dir := t.TempDir()
			cfg := e.config(dir, g)
			cfg.Retry = RetryPolicy{Attempts: 10, InitialBackoff: time.Minute, MaxBackoff: time.Minute}
			r := start(t, w.step(e.app), cfg)
			e.produce(0, n, instances)
			// The other partitions commit while 13's partition holds.
			outs := e.counted(n/2, 10*time.Second)
			if len(outs) < n/2 {
				t.Fatalf("only %d outputs while one partition holds", len(outs))
			}
			waitFor(t, 5*time.Second, "a retry is due", metricIs(t, "retries", r.rt.m.retries, 1))
			if ok, why := r.rt.Ready(); !ok {
				t.Fatalf("not ready while retrying: %s", why)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			held := len(outs)

			w.setFail(nil)
			r = start(t, w.step(e.app), cfg)
			outs = e.counted(n, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			checkOutputs(t, e, outs, wantCounts(n, instances), g == ExactlyOnce)
			if g == ExactlyOnce && len(outs) != n {
				t.Fatalf("%d outputs (%d before the restart), want %d", len(outs), held, n)
			}
			if got := counts(t, dir, e.app, 4); !maps.Equal(got, wantCounts(n, instances)) {
				t.Fatalf("state counts %v", got)
			}
		})
	}
}

// TestParkedOrderSurvivesFailuresDuringRecovery replays a dead letter while
// the handler is still broken (the replay fails again and the instance stays
// blocked, its parked events parked), then fixes that event but breaks a
// parked one (it fails while the park drains: a new dead letter, and the
// events behind it are parked again), then fixes everything: the instance's
// events still run in their original order, each once.
func TestParkedOrderSurvivesFailuresDuringRecovery(t *testing.T) {
	const n, instances = 40, 4 // i-001 gets 1, 5, 9, ..., 37
	e := newEnv(t, 2)
	var mu sync.Mutex
	broken := map[int64]bool{5: true}
	w := &switchStep{fail: func(key string, n int64) error {
		mu.Lock()
		defer mu.Unlock()
		if key == "i-001" && broken[n] {
			return fmt.Errorf("cannot handle %d", n)
		}
		return nil
	}}
	setBroken := func(ns ...int64) {
		mu.Lock()
		defer mu.Unlock()
		clear(broken)
		for _, n := range ns {
			broken[n] = true
		}
	}
	cfg := e.config(t.TempDir(), ExactlyOnce)
	cfg.Retry = fastRetry(3)
	r := start(t, w.step(e.app), cfg)
	e.produce(0, n, instances)
	e.counted(n-9, 10*time.Second)
	waitFor(t, 5*time.Second, "8 parked", metricIs(t, "parked", r.rt.m.parked, 8))
	dlqTopic := e.app + ".count.dlq"
	dls := e.consume(dlqTopic, 1, 5*time.Second)

	// Replayed while still broken: a second dead letter, nothing runs.
	e.sendRetry(dls[0], dlq.Replay)
	dls = e.consume(dlqTopic, 2, 5*time.Second)
	if len(dls) != 2 || header(dls[1], dlq.HeaderReplayCount) != "1" || header(dls[1], event.HeaderID) != header(dls[0], event.HeaderID) {
		t.Fatalf("dead letters after a failed replay: %d, the last %v", len(dls), dls[len(dls)-1].Headers)
	}
	waitFor(t, 5*time.Second, "8 parked again", metricIs(t, "parked", r.rt.m.parked, 8))
	if got := w.of("i-001"); !slices.Equal(got, []int64{1}) {
		t.Fatalf("i-001 handled %v while blocked", got)
	}

	// 5 fixed, 17 broken: 5, 9 and 13 run, 17 is a dead letter, 21.. wait.
	setBroken(17)
	e.sendRetry(dls[1], dlq.Replay)
	dls = e.consume(dlqTopic, 3, 5*time.Second)
	if len(dls) != 3 || !strings.Contains(header(dls[2], dlq.HeaderError), "cannot handle 17") {
		t.Fatalf("%d dead letters, want a third for tick 17", len(dls))
	}
	waitFor(t, 5*time.Second, "5 parked", metricIs(t, "parked", r.rt.m.parked, 5))
	if got := w.of("i-001"); !slices.Equal(got, []int64{1, 5, 9, 13}) {
		t.Fatalf("i-001 handled %v, want [1 5 9 13]", got)
	}

	setBroken()
	e.sendRetry(dls[2], dlq.Replay)
	outs := e.counted(n, 10*time.Second)
	want := ticksFor("i-001", n, instances)
	if got := ticksOf(outs, "i-001"); !slices.Equal(got, want) {
		t.Fatalf("i-001 outputs for %v, want %v", got, want)
	}
	checkOutputs(t, e, outs, wantCounts(n, instances), true)
	if len(outs) != n {
		t.Fatalf("%d outputs, want %d", len(outs), n)
	}
	waitFor(t, 5*time.Second, "nothing parked", metricIs(t, "parked", r.rt.m.parked, 0))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
