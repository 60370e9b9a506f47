package step

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Two revocations inside one transaction: a slow handler holds the
// interval open while a second and then a third member join, so the first
// member gives partitions up twice before its transaction ends. Unpatched,
// franz-go's GroupTransactSession passed only the first revocation on
// (pkg/kafka/internal/franz-go/PATCHES.md): the member kept running the
// tasks of partitions the other two now owned, serving their stale state,
// firing their timers, and never restoring them when they came back.
func TestRevocationsWithinOneTransaction(t *testing.T) {
	for _, proto := range []GroupProtocol{GroupProtocolClassic, GroupProtocolConsumer} {
		t.Run(string(proto), func(t *testing.T) {
			const partitions = 6
			e := newEnv(t, partitions)
			entered, gate := make(chan struct{}, 1), make(chan struct{})
			def := func() Definition {
				s := New[counter](e.app, "count", Inputs("ticks"))
				Handle(s, func(c *Context[counter], ev Tick) error {
					if ev.N < 0 {
						// A call to a service that does not honour
						// its context: it ends when the test says.
						select {
						case entered <- struct{}{}:
						default: // called again, after an abort
						}
						<-gate
					}
					return count(c, ev)
				})
				return s
			}
			config := func() Config {
				cfg := e.config(t.TempDir(), ExactlyOnce)
				cfg.GroupProtocol = proto
				cfg.TransactionTimeout = time.Minute
				cfg.HandlerTimeout = 40 * time.Second
				return cfg
			}
			a := start(t, def(), config())
			a.waitActive(t, partitions, 10*time.Second)
			if err := e.cl.ProduceSync(t.Context(), e.tick("ticks", "i-slow", -1, "slow")).FirstErr(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the slow handler was not called in 10 s")
			}

			// A new member is given a partition only once its owner gave
			// it up; its restore may then wait for a's transaction.
			b := start(t, def(), config())
			b.waitAssigned(t, partitions/2, 30*time.Second)
			c := start(t, def(), config())
			c.waitAssigned(t, partitions/3, 30*time.Second)
			b.waitAssigned(t, partitions/3, 30*time.Second)
			close(gate)

			// a's transaction ends (aborted: partitions moved); from then
			// on a must hold only what the group gave it.
			owners := func() (map[int32][]string, string) {
				held := map[int32][]string{}
				var desc string
				for _, m := range []struct {
					name string
					r    *running
				}{{"a", a}, {"b", b}, {"c", c}} {
					ps := m.r.rt.Partitions()
					desc += fmt.Sprintf(" %s=%v", m.name, ps)
					for _, p := range ps {
						held[p] = append(held[p], m.name)
					}
				}
				return held, desc
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				held, desc := owners()
				ok := len(held) == partitions
				for _, names := range held {
					ok = ok && len(names) == 1
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					var twice []int32
					for p, names := range held {
						if len(names) > 1 {
							twice = append(twice, p)
						}
					}
					slices.Sort(twice)
					t.Fatalf("20 s after the slow transaction ended, partitions are held%s: %v run in two members at once", desc, twice)
				}
				time.Sleep(20 * time.Millisecond)
			}

			// And the group goes on working: every tick is counted once.
			e.produce(0, 60, 12)
			got := e.consume("counted", 61, 30*time.Second)
			if len(got) != 61 {
				t.Fatalf("%d counted records, want 61 (60 ticks and the slow one)", len(got))
			}
		})
	}
}

// waitAssigned waits until the runtime holds want tasks, restored or not.
func (r *running) waitAssigned(t testing.TB, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.rt.mu.Lock()
		n := len(r.rt.tasks)
		r.rt.mu.Unlock()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d partitions assigned after %s, want %d", n, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// While a topology change rolls out, a step's replicas subscribe to
// different topics (a saga's new step adds its topics to the coordinator's),
// and KIP-848's broker assigns each topic among the members subscribed to
// it: partition p of one topic to an old replica, of another to a new one.
// A partition's state is one, so a member runs p only while it holds p on
// every topic it consumes; the part it holds waits, paused, until the
// rollout ends.
func TestPartitionSplitAcrossTopicsWaits(t *testing.T) {
	const partitions, instances = 4, 8
	e := newEnv(t, partitions)
	e.createTopic("ticks2")
	config := func() Config {
		cfg := e.config(t.TempDir(), ExactlyOnce)
		cfg.GroupProtocol = GroupProtocolConsumer
		return cfg
	}
	old := start(t, countStep(e.app, "ticks"), config())
	old.waitActive(t, partitions, 10*time.Second)
	e.produce(0, 40, instances)
	if got := e.consume("counted", 40, 20*time.Second); len(got) != 40 {
		t.Fatalf("%d counted before the rollout, want 40", len(got))
	}

	// The new replica subscribes to ticks2 too: it is given every
	// partition of ticks2 but only half of ticks.
	young := start(t, countStep(e.app, "ticks", "ticks2"), config())
	young.waitActive(t, partitions/2, 30*time.Second)
	old.waitActive(t, partitions/2, 30*time.Second)
	for range 20 { // a while: a split partition must stay inactive
		o, y := old.rt.Partitions(), young.rt.Partitions()
		for _, p := range o {
			if slices.Contains(y, p) {
				t.Fatalf("partition %d runs in both members (old %v, new %v): two states for one partition", p, o, y)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	rs := make([]*kgo.Record, 0, 40)
	for n := 40; n < 80; n++ {
		rs = append(rs, e.tick("ticks2", fmt.Sprintf("i-%03d", n%instances), int64(n), event.NewID()))
	}
	if err := e.cl.ProduceSync(t.Context(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// The rollout ends: the new replica takes every partition, restores
	// what the old one wrote, and counts on from it.
	if err := old.stop(); err != nil {
		t.Fatal(err)
	}
	young.waitActive(t, partitions, 30*time.Second)
	got := e.consume("counted", 80, 30*time.Second)
	byKey := map[string][]int64{}
	for _, r := range got {
		_, v, err := e.codec.Decode(t.Context(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		byKey[string(r.Key)] = append(byKey[string(r.Key)], v.(Counted).Count)
	}
	for key, cs := range byKey {
		for i, c := range cs {
			if c != int64(i+1) {
				t.Fatalf("instance %s counted %v: a count from another member's copy of its state", key, cs)
			}
		}
	}
	if len(got) != 80 || len(byKey) != instances {
		t.Fatalf("%d counted records over %d instances, want 80 over %d", len(got), len(byKey), instances)
	}
}

// A run of aborts backs off (a zombie refused again and again hammered the
// broker with 170 transactions a second); one abort is retried at once.
func TestAbortBackoff(t *testing.T) {
	if d := abortBackoff(1); d != 0 {
		t.Fatalf("after one abort: wait %s, want none (a rebalance is retried at once)", d)
	}
	prev := time.Duration(0)
	for n := 2; n < 40; n++ {
		d := abortBackoff(n)
		if d < prev || d <= 0 || d > 2*time.Second {
			t.Fatalf("after %d aborts: wait %s (after %d: %s); want growing, above 0, at most 2s", n, d, n-1, prev)
		}
		prev = d
	}
	if prev != 2*time.Second {
		t.Fatalf("after 39 aborts: wait %s, want the 2s cap", prev)
	}
}
