package step

import (
	"fmt"
	"slices"
	"testing"
	"time"
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
					st, _ := c.State()
					st.Count++
					c.SetState(st)
					return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
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
