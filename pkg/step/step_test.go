package step

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/state"
)

// checkOutputs checks that outs hold one Counted per input: per instance,
// counts 1..n each exactly once (exactOnce), or at least once.
func checkOutputs(t *testing.T, e *env, outs []*counted, want map[string]int64, exactlyOnce bool) {
	t.Helper()
	seen := map[string]map[int64]int{}
	for _, o := range outs {
		if seen[o.key] == nil {
			seen[o.key] = map[int64]int{}
		}
		seen[o.key][o.Count]++
	}
	for key, n := range want {
		for c := int64(1); c <= n; c++ {
			got := seen[key][c]
			if got == 0 || exactlyOnce && got > 1 {
				t.Fatalf("instance %s: output with count %d seen %d times (of %d inputs)", key, c, got, n)
			}
		}
		if len(seen[key]) != int(n) {
			t.Fatalf("instance %s: %d distinct counts, want %d", key, len(seen[key]), n)
		}
	}
}

type counted struct {
	Counted
	key, id string
}

func (e *env) counted(want int, timeout time.Duration) []*counted {
	e.t.Helper()
	var out []*counted
	for _, r := range e.consume("counted", want, timeout) {
		_, v, err := e.codec.Decode(e.t.Context(), r.Value)
		if err != nil {
			e.t.Fatal(err)
		}
		m, _ := event.FromRecord(r)
		out = append(out, &counted{Counted: v.(Counted), key: string(r.Key), id: m.ID})
	}
	return out
}

func TestCountEveryGuarantee(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		for _, proto := range []GroupProtocol{GroupProtocolConsumer, GroupProtocolClassic} {
			t.Run(g.String()+"/"+string(proto), func(t *testing.T) {
				const n, instances = 3000, 40
				e := newEnv(t, 8)
				e.produce(0, n/2, instances)
				dir := t.TempDir()
				cfg := e.config(dir, g)
				cfg.GroupProtocol = proto
				r := start(t, countStep(e.app), cfg)
				e.produce(n/2, n/2, instances)
				outs := e.counted(n, 20*time.Second)
				if err := r.stop(); err != nil {
					t.Fatal(err)
				}
				want := wantCounts(n, instances)
				checkOutputs(t, e, outs, want, g == ExactlyOnce)
				if g == ExactlyOnce && len(outs) != n {
					t.Fatalf("%d outputs for %d inputs", len(outs), n)
				}
				ids := map[string]bool{}
				for _, o := range outs {
					if ids[o.id] && g == ExactlyOnce {
						t.Fatalf("output id %s twice", o.id)
					}
					ids[o.id] = true
				}
				if got := counts(t, dir, e.app, 8); !maps.Equal(got, want) {
					t.Fatalf("state counts %v, want %v", got, want)
				}
				if got := counterValue(t, r.rt.m.processed); got != n {
					t.Fatalf("processed metric %v, want %d", got, n)
				}
			})
		}
	}
}

// changelogCounts reads the latest instance records from the changelog, to
// its end.
func (e *env) changelogCounts(app string) map[string]int64 {
	e.t.Helper()
	topic := app + ".count.changelog"
	ends, err := kadm.NewClient(e.cl).ListEndOffsets(e.t.Context(), topic)
	if err != nil {
		e.t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.ConsumeTopics(topic), kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	latest := map[string][]byte{}
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("read %s: %v", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
			if !r.Attrs.IsControl() && len(r.Key) > 0 && r.Key[0] == state.KindInstance {
				latest[string(r.Key[1:])] = r.Value
			}
		})
	}
	out := map[string]int64{}
	for id, v := range latest {
		inst, err := state.DecodeInstance(v)
		if err != nil {
			e.t.Fatal(err)
		}
		var c counter
		if err := json.Unmarshal(inst.State, &c); err != nil {
			e.t.Fatal(err)
		}
		out[id] = c.Count
	}
	return out
}

func TestRestartAndLostDisk(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const instances = 25
			e := newEnv(t, 4)
			dir := t.TempDir()
			cfg := e.config(dir, g)

			e.produce(0, 500, instances)
			r := start(t, countStep(e.app), cfg)
			e.counted(500, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}

			// Same dir: nothing to restore, counting continues.
			e.produce(500, 500, instances)
			r = start(t, countStep(e.app), cfg)
			e.counted(1000, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if got := counterValue(t, r.rt.m.restoreRecords); got != 0 {
				t.Fatalf("restart with an intact store restored %v records", got)
			}

			// Lost disk: everything comes back from the changelog.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			e.produce(1000, 500, instances)
			cfg.Registerer = prometheus.NewRegistry()
			r = start(t, countStep(e.app), cfg)
			outs := e.counted(1500, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if got := counterValue(t, r.rt.m.restoreRecords); got == 0 {
				t.Fatal("restore after a lost disk restored nothing")
			}
			want := wantCounts(1500, instances)
			checkOutputs(t, e, outs, want, g == ExactlyOnce)
			if got := counts(t, dir, e.app, 4); !maps.Equal(got, want) {
				t.Fatalf("state counts %v, want %v", got, want)
			}
		})
	}
}

func TestRebalanceMovesStateAndTimers(t *testing.T) {
	const instances = 30
	e := newEnv(t, 6)
	s := New[counter](e.app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[counter], ev Tick) error {
		st, _ := c.State()
		st.Count++
		c.SetState(st)
		if ev.N == -1 { // a timer that fires while its partition moves
			return c.After(1500*time.Millisecond, "late", "counted", Counted{N: -1})
		}
		return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
	})
	cfg1, cfg2 := e.config(t.TempDir(), ExactlyOnce), e.config(t.TempDir(), ExactlyOnce)
	// Classic: members leaving cleanly rebalance at once (KIP-848 on kfake
	// waits for a 5 s heartbeat), and it runs the co-partitioning balancer.
	cfg1.GroupProtocol, cfg2.GroupProtocol = GroupProtocolClassic, GroupProtocolClassic
	r1 := start(t, s, cfg1)
	r1.waitActive(t, 6, 10*time.Second)
	r2 := start(t, s, cfg2)
	r1.waitActive(t, 3, 15*time.Second)
	r2.waitActive(t, 3, 15*time.Second)

	e.produce(0, 600, instances)
	e.counted(600, 10*time.Second)
	// One timer per instance, set while the partitions are split.
	var rs []*kgo.Record
	for i := range instances {
		rs = append(rs, e.tick("ticks", fmt.Sprintf("i-%03d", i), -1, event.NewID()))
	}
	if err := e.cl.ProduceSync(t.Context(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // handled; timers not yet due
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	r1.waitActive(t, 6, 15*time.Second)
	e.produce(600, 600, instances)
	outs := e.counted(1200+instances, 15*time.Second)
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}

	if got := counterValue(t, r1.rt.m.restoreRecords); got == 0 {
		t.Fatal("the new owner restored nothing")
	}
	var fired int
	var regular []*counted
	for _, o := range outs {
		if o.N == -1 {
			fired++
		} else {
			regular = append(regular, o)
		}
	}
	if fired != instances {
		t.Fatalf("%d timers fired, want %d (one per instance, on whichever member held it)", fired, instances)
	}
	if len(regular) != 1200 {
		t.Fatalf("%d outputs for 1200 inputs", len(regular))
	}
	want := wantCounts(1200, instances)
	for k := range want {
		want[k]++ // the timer-setting tick
	}
	if got := e.changelogCounts(e.app); !maps.Equal(got, want) {
		t.Fatalf("changelog counts %v, want %v", got, want)
	}
}

type timerState struct{}

// timerStep sets timer "reply" on every tick to emit Counted{N}; N = -1
// cancels it instead.
func timerStep(app string, d time.Duration) *Step[timerState] {
	s := New[timerState](app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[timerState], ev Tick) error {
		if ev.N == -1 {
			c.Cancel("reply")
			return nil
		}
		return c.After(d, "reply", "counted", Counted{N: ev.N})
	})
	return s
}

func TestTimers(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			e := newEnv(t, 2)
			dir := t.TempDir()
			cfg := e.config(dir, g)
			send := func(key string, n int64) {
				if err := e.cl.ProduceSync(t.Context(), e.tick("ticks", key, n, event.NewID())).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			r := start(t, timerStep(e.app, 1500*time.Millisecond), cfg)
			r.waitActive(t, 2, 10*time.Second)
			send("fires", 1)
			send("cancelled", 2)
			send("cancelled", -1)
			send("replaced", 3)
			send("replaced", 4)
			send("survives", 5)
			time.Sleep(400 * time.Millisecond)
			if err := r.stop(); err != nil { // "survives" is due while we are down
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond)
			if err := os.RemoveAll(dir); err != nil { // and the disk is lost too
				t.Fatal(err)
			}
			r = start(t, timerStep(e.app, 1500*time.Millisecond), cfg)
			outs := e.counted(3, 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			got := map[string][]int64{}
			for _, o := range outs {
				got[o.key] = append(got[o.key], o.N)
			}
			want := map[string][]int64{"fires": {1}, "replaced": {4}, "survives": {5}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("fired %v, want %v", got, want)
			}
			// The fired event carries the id fixed when it was set, the
			// cause, and the timer's name.
			for _, r := range e.consume("counted", 3, time.Second) {
				m, _ := event.FromRecord(r)
				if m.IDDerived || m.CausationID == "" || m.Type != "troupe.test.Counted" || m.Source != e.app+".count" || m.Timer != "reply" {
					t.Fatalf("fired event metadata %+v", m)
				}
			}
		})
	}
}

func TestDuplicatesAndIgnoredTypes(t *testing.T) {
	e := newEnv(t, 1)
	dir := t.TempDir()
	id := event.NewID()
	other, err := e.codec.Encode(t.Context(), "ticks", Other{X: "not for us"})
	if err != nil {
		t.Fatal(err)
	}
	om := event.New("troupe.test.Other", "test", "a")
	noType, _ := e.codec.Encode(t.Context(), "ticks", Other{X: "no ce_type header"})
	rs := []*kgo.Record{
		e.tick("ticks", "a", 1, id),
		e.tick("ticks", "a", 1, id), // produced twice by a retrying client
		{Topic: "ticks", Key: []byte("a"), Value: other, Headers: om.Headers()},
		{Topic: "ticks", Key: []byte("a"), Value: noType},
		e.tick("ticks", "a", 2, event.NewID()),
	}
	if err := e.cl.ProduceSync(t.Context(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r := start(t, countStep(e.app), e.config(dir, ExactlyOnce))
	outs := e.counted(2, 10*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("%d outputs, want 2", len(outs))
	}
	m := r.rt.m
	for name, want := range map[string]float64{"processed": 2, "duplicate": 1, "ignored": 2} {
		c := map[string]prometheus.Counter{"processed": m.processed, "duplicate": m.duplicate, "ignored": m.ignored}[name]
		if got := counterValue(t, c); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := counts(t, dir, e.app, 1); got["a"] != 2 {
		t.Fatalf("count of a = %d, want 2", got["a"])
	}
}

// TestFailingRecordStopsItsPartitionOnly runs RetryPolicy.StopPartition:
// past its retries, a failing record stops its partition instead of being
// dead-lettered.
func TestFailingRecordStopsItsPartitionOnly(t *testing.T) {
	for _, mode := range []string{"error", "panic"} {
		for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
			t.Run(mode+"/"+g.String(), func(t *testing.T) {
				e := newEnv(t, 4)
				dir := t.TempDir()
				poison := true
				s := New[counter](e.app, "count", Inputs("ticks"))
				Handle(s, func(c *Context[counter], ev Tick) error {
					if ev.N == 13 && poison {
						if mode == "panic" {
							panic("boom")
						}
						return errors.New("cannot handle 13")
					}
					st, _ := c.State()
					st.Count++
					c.SetState(st)
					return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
				})
				const instances = 8
				e.produce(0, 200, instances) // tick 13 goes to instance i-005
				cfg := e.config(dir, g)
				cfg.Retry = RetryPolicy{Attempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, StopPartition: true}
				r := start(t, s, cfg)
				var ready bool
				var why string
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					if ready, why = r.rt.Ready(); strings.Contains(why, "stopped") {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if ready || !strings.Contains(why, "cannot handle 13") && !strings.Contains(why, "panicked: boom") {
					t.Fatalf("ready=%v %q, want a stopped partition naming the error", ready, why)
				}
				outs := e.counted(150, 5*time.Second)
				if err := r.stop(); err != nil {
					t.Fatal(err)
				}
				byKey := map[string]int{}
				for _, o := range outs {
					byKey[o.key]++
				}
				if byKey["i-005"] > 1 { // ticks 5 then 13: only 5 got through
					t.Fatalf("instance i-005 got %d outputs past its failing record", byKey["i-005"])
				}
				if len(byKey) < 2 {
					t.Fatalf("other partitions did not go on: %v", byKey)
				}
				if got := counterValue(t, r.rt.m.failed); got < 1 {
					t.Fatalf("error outcome %v", got)
				}

				// Fixed and restarted: the failing record was not skipped.
				poison = false
				r = start(t, s, cfg)
				outs = e.counted(200, 10*time.Second)
				if err := r.stop(); err != nil {
					t.Fatal(err)
				}
				checkOutputs(t, e, outs, wantCounts(200, instances), g == ExactlyOnce)
				if got := counts(t, dir, e.app, 4); !maps.Equal(got, wantCounts(200, instances)) {
					t.Fatalf("state counts %v", got)
				}
			})
		}
	}
}

func TestRunRefusesAnotherStepsStateDir(t *testing.T) {
	e := newEnv(t, 1)
	dir := t.TempDir()
	s, err := state.Open(dir, state.Options{App: "other", Step: "thing"})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	err = Run(t.Context(), countStep(e.app), e.config(dir, ExactlyOnce))
	var ie *state.IdentityError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "troupe state rebuild") {
		t.Fatalf("run on another step's dir: %v", err)
	}
}

func TestValidation(t *testing.T) {
	dup := New[counter]("a", "s", Inputs("x"))
	Handle(dup, func(*Context[counter], Tick) error { return nil })
	Handle(dup, func(*Context[counter], Tick) error { return nil })
	tests := []struct {
		name string
		def  Definition
		cfg  Config
		want []string
	}{
		{"empty config", countStep("a"), Config{}, []string{"no brokers", "no codec", "no state dir"}},
		{"bad step", New[counter]("", "s b"), Config{}, []string{"empty app", "not usable in a topic name", "no inputs", "no handlers"}},
		{"duplicate handler", dup, Config{}, []string{"two handlers for event type step.Tick"}},
		{"unregistered type", countStep("a"), Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:1"}}, Codec: avro.NewSerde(&memRegistry{}), StateDir: "x"}, []string{"not registered"}},
		{"bad numbers", countStep("a"), Config{CommitInterval: time.Minute, TransactionTimeout: time.Second, Guarantee: 7, GroupProtocol: "x"}, []string{"unknown guarantee", "unknown group protocol"}},
		{"interval outlives its transaction", countStep("a"), Config{CommitInterval: time.Second, HandlerTimeout: 8 * time.Second}, []string{"CommitInterval 1s + HandlerTimeout 8s must stay within 80% of TransactionTimeout 10s", "--handler-timeout"}},
		{"handler timeout past the transaction", countStep("a"), Config{HandlerTimeout: 10 * time.Second}, []string{"HandlerTimeout 10s must stay within 80% of TransactionTimeout 10s"}},
		{"concurrency out of range", countStep("a"), Config{Concurrency: -1}, []string{"Concurrency -1 is out of range (1 to 10000"}},
		{"absurd concurrency", countStep("a"), Config{Concurrency: 1 << 20}, []string{"Concurrency 1048576 is out of range"}},
		{"step concurrency out of range", New[counter]("a", "s", Inputs("x"), Concurrency(-3)), Config{}, []string{"step.Concurrency(-3) is out of range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRuntime(tt.def, tt.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestMissingInputsAndPartitionMismatch(t *testing.T) {
	shortTopicWait(t, 200*time.Millisecond)
	e := newEnv(t, 2)
	s := New[counter](e.app, "count", Inputs("ticks", "nope"))
	Handle(s, func(*Context[counter], Tick) error { return nil })
	err := Run(t.Context(), s, e.config(t.TempDir(), ExactlyOnce))
	if err == nil || !strings.Contains(err.Error(), "input topic nope does not exist") {
		t.Fatalf("missing input: %v", err)
	}
	if _, err := kadm.NewClient(e.cl).CreateTopic(t.Context(), 3, 1, nil, "three"); err != nil {
		t.Fatal(err)
	}
	s = New[counter](e.app, "count", Inputs("ticks", "three"))
	Handle(s, func(*Context[counter], Tick) error { return nil })
	err = Run(t.Context(), s, e.config(t.TempDir(), ExactlyOnce))
	if err == nil || !strings.Contains(err.Error(), "different partition counts") {
		t.Fatalf("partition mismatch: %v", err)
	}
}

// rewind sets the step's committed offsets back to the start, as a crash
// between applying state and committing offsets would leave them.
func (e *env) rewind(group string) {
	e.t.Helper()
	os := make(kadm.Offsets)
	for p := range e.nparts {
		os.Add(kadm.Offset{Topic: "ticks", Partition: p, At: 0, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(e.cl).CommitOffsets(e.t.Context(), group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

// countThenRewind counts n ticks over instances with a step on dir, stops
// it, and rewinds its group to the start, so that a restart is redelivered
// everything. It returns the step's config, for the restart.
func (e *env) countThenRewind(dir string, g Guarantee, n, instances int) Config {
	e.t.Helper()
	cfg := e.config(dir, g)
	cfg.GroupProtocol = GroupProtocolClassic
	e.produce(0, n, instances)
	r := start(e.t, countStep(e.app), cfg)
	e.counted(n, 10*time.Second)
	if err := r.stop(); err != nil {
		e.t.Fatal(err)
	}
	e.rewind(e.app + ".count")
	return cfg
}

func TestRedeliveryDroppedByAppliedOffsets(t *testing.T) {
	for _, lostDisk := range []bool{false, true} {
		t.Run(fmt.Sprintf("lost disk %v", lostDisk), func(t *testing.T) {
			const n, instances = 400, 10
			e := newEnv(t, 2)
			dir := t.TempDir()
			cfg := e.countThenRewind(dir, AtLeastOnce, n, instances)
			if lostDisk {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			cfg.Registerer = prometheus.NewRegistry()
			r := start(t, countStep(e.app), cfg)
			r.waitActive(t, 2, 10*time.Second)
			deadline := time.Now().Add(10 * time.Second)
			for counterValue(t, r.rt.m.duplicate) < n && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if got := counterValue(t, r.rt.m.duplicate); got != n {
				t.Fatalf("%v redelivered records dropped, want %d", got, n)
			}
			if got := counterValue(t, r.rt.m.processed); got != 0 {
				t.Fatalf("%v redelivered records processed again", got)
			}
			if got := counts(t, dir, e.app, 2); !maps.Equal(got, wantCounts(n, instances)) {
				t.Fatalf("state counts %v", got)
			}
		})
	}
}

// A state write that reached the store (or the changelog) without the
// progress of its interval, as an at-least-once flush cut short by a crash
// can leave it: the partition's progress says the records are new, and the
// instances' recent ids cover only the last 16 of each. Each instance's
// applied offset, stored with its state, drops them all.
func TestRedeliveryBeyondProgressDroppedByInstanceOffsets(t *testing.T) {
	for _, g := range []Guarantee{AtLeastOnce, ExactlyOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances = 400, 10 // 40 per instance: past the dedupe window
			e := newEnv(t, 2)
			dir := t.TempDir()
			cfg := e.countThenRewind(dir, g, n, instances)
			// Forget the progress: the store says nothing was processed.
			s, err := state.Open(dir, state.Options{App: e.app, Step: "count"})
			if err != nil {
				t.Fatal(err)
			}
			txn := s.NewTxn()
			for p := range e.nparts {
				if err := txn.Set(p, state.InputOffsetKey("ticks"), state.EncodeProgress(state.Progress{})); err != nil {
					t.Fatal(err)
				}
			}
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			cfg.Registerer = prometheus.NewRegistry()
			r := start(t, countStep(e.app), cfg)
			r.waitActive(t, 2, 10*time.Second)
			deadline := time.Now().Add(10 * time.Second)
			for counterValue(t, r.rt.m.duplicate)+counterValue(t, r.rt.m.processed) < n && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if got := counterValue(t, r.rt.m.processed); got != 0 {
				t.Fatalf("%v redelivered records processed again (%v dropped)", got, counterValue(t, r.rt.m.duplicate))
			}
			if got := counterValue(t, r.rt.m.duplicate); got != n {
				t.Fatalf("%v redelivered records dropped, want %d", got, n)
			}
			if got := counts(t, dir, e.app, 2); !maps.Equal(got, wantCounts(n, instances)) {
				t.Fatalf("state counts %v, want %v", got, wantCounts(n, instances))
			}
		})
	}
}

// A store that is behind the changelog (a crash after the transaction
// committed and before the store applied it, or an old backup) catches up
// from the changelog offset it holds.
func TestStaleStoreCatchesUp(t *testing.T) {
	const instances = 20
	e := newEnv(t, 4)
	dir := t.TempDir()
	cfg := e.config(dir, ExactlyOnce)
	e.produce(0, 300, instances)
	r := start(t, countStep(e.app), cfg)
	e.counted(300, 10*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "old")
	if err := os.CopyFS(old, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}

	e.produce(300, 300, instances)
	r = start(t, countStep(e.app), cfg)
	e.counted(600, 10*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, dir); err != nil {
		t.Fatal(err)
	}
	e.produce(600, 300, instances)
	cfg.Registerer = prometheus.NewRegistry()
	r = start(t, countStep(e.app), cfg)
	outs := e.counted(900, 10*time.Second)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, r.rt.m.restoreRecords); got == 0 {
		t.Fatal("the stale store restored nothing")
	}
	want := wantCounts(900, instances)
	checkOutputs(t, e, outs, want, true)
	if got := counts(t, dir, e.app, 4); !maps.Equal(got, want) {
		t.Fatalf("state counts %v, want %v", got, want)
	}
}

// Produce errors in the middle of exactly-once work (a broker lost with a
// transaction open, a transaction the coordinator timed out) abort the
// interval; the step processes again from the last commit and carries on,
// each input answered once.
func TestProduceErrorsAbortAndRecover(t *testing.T) {
	const n, instances = 600, 20
	e := newEnv(t, 4)
	tds, err := kadm.NewClient(e.cl).ListTopics(context.Background(), "counted")
	if err != nil {
		t.Fatal(err)
	}
	counted := tds["counted"].ID // produce v13+ names topics by id
	var failures atomic.Int32
	failures.Store(3)
	e.c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		e.c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		isCounted := func(t kmsg.ProduceRequestTopic) bool { return t.Topic == "counted" || t.TopicID == counted }
		if !slices.ContainsFunc(req.Topics, isCounted) || failures.Add(-1) < 0 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	e.produce(0, n, instances)
	dir := t.TempDir()
	r := start(t, countStep(e.app), e.config(dir, ExactlyOnce))
	outs := e.counted(n, 30*time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("the step stopped on produce errors: %v", err)
	}
	if failures.Load() >= 0 {
		t.Fatalf("the produce errors were not injected (%d left)", failures.Load())
	}
	want := wantCounts(n, instances)
	checkOutputs(t, e, outs, want, true)
	if len(outs) != n {
		t.Fatalf("%d outputs for %d inputs", len(outs), n)
	}
	if got := counts(t, dir, e.app, 4); !maps.Equal(got, want) {
		t.Fatalf("state counts %v, want %v", got, want)
	}
	if got := counterValue(t, r.rt.m.aborts); got < 1 {
		t.Errorf("aborts metric %v, want the failed transactions counted", got)
	}
}

// An End that fails (a broker killed, the transaction coordinator moving;
// here INVALID_TXN_STATE three times) rejoins with a new session instead of
// stopping the step; whatever did not commit is processed again, once.
func TestEndFailureRejoins(t *testing.T) {
	const n, instances = 600, 20
	e := newEnv(t, 4)
	var failures atomic.Int32
	failures.Store(3)
	e.c.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		e.c.KeepControl()
		req := kreq.(*kmsg.EndTxnRequest)
		if !req.Commit || failures.Add(-1) < 0 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.InvalidTxnState.Code
		return resp, nil, true
	})
	e.produce(0, n, instances)
	dir := t.TempDir()
	r := start(t, countStep(e.app), e.config(dir, ExactlyOnce))
	outs := e.counted(n, 60*time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("the step stopped on failed Ends: %v", err)
	}
	if failures.Load() >= 0 {
		t.Fatalf("the End failures were not injected (%d left)", failures.Load())
	}
	want := wantCounts(n, instances)
	checkOutputs(t, e, outs, want, true)
	if len(outs) != n {
		t.Fatalf("%d outputs for %d inputs", len(outs), n)
	}
	if got := counts(t, dir, e.app, 4); !maps.Equal(got, want) {
		t.Fatalf("state counts %v, want %v", got, want)
	}
}
