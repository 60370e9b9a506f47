package step

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowCountStep counts ticks like countStep, but each handler call waits a
// random time up to maxDelay (on its context, as a call to a service
// would), and it records the largest number of calls that overlapped and
// any instance whose calls overlapped or ran out of order.
type slowCounter struct {
	maxDelay   time.Duration
	mu         sync.Mutex
	running    map[string]bool
	active     atomic.Int64
	maxActive  atomic.Int64
	violations []string
}

func (sc *slowCounter) step(app string) *Step[counter] {
	s := New[counter](app, "count", Inputs("ticks"))
	sc.running = map[string]bool{}
	Handle(s, func(c *Context[counter], ev Tick) error {
		id := c.Key()
		sc.mu.Lock()
		if sc.running[id] {
			sc.violations = append(sc.violations, "two calls of "+id+" at once")
		}
		sc.running[id] = true
		sc.mu.Unlock()
		n := sc.active.Add(1)
		for m := sc.maxActive.Load(); n > m && !sc.maxActive.CompareAndSwap(m, n); m = sc.maxActive.Load() {
		}
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(sc.maxDelay)))):
		case <-c.Context().Done():
		}
		sc.active.Add(-1)
		sc.mu.Lock()
		sc.running[id] = false
		sc.mu.Unlock()
		st, _ := c.State()
		st.Count++
		c.SetState(st)
		return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
	})
	return s
}

// Records of different instances run concurrently, one instance's in
// offset order: over a backlog, with random handler delays, every input is
// answered (exactly once under exactly-once), each instance's outputs come
// in input order with counts 1, 2, 3..., and its state is exact.
func TestKeyOrderedConcurrency(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(g.String(), func(t *testing.T) {
			const n, instances, concurrency = 1200, 60, 32
			e := newEnv(t, 4)
			e.produce(0, n, instances) // a backlog before the step starts
			dir := t.TempDir()
			cfg := e.config(dir, g)
			cfg.Concurrency = concurrency
			sc := &slowCounter{maxDelay: 10 * time.Millisecond}
			r := start(t, sc.step(e.app), cfg)
			outs := e.counted(n, 60*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			want := wantCounts(n, instances)
			checkOutputs(t, e, outs, want, g == ExactlyOnce)
			if g == ExactlyOnce && len(outs) != n {
				t.Fatalf("%d outputs for %d inputs", len(outs), n)
			}
			// Per instance, the outputs' input numbers rise with the count:
			// the n-th output answers the instance's n-th input.
			byKey := map[string][]*counted{}
			for _, o := range outs {
				byKey[o.key] = append(byKey[o.key], o)
			}
			for key, os := range byKey {
				var lastCount, lastN int64 = 0, -1
				for _, o := range os {
					if o.Count <= lastCount && g == ExactlyOnce || o.Count == lastCount+1 && o.N <= lastN {
						t.Fatalf("instance %s: output count %d (input %d) after count %d (input %d): out of order", key, o.Count, o.N, lastCount, lastN)
					}
					if o.Count > lastCount {
						lastCount, lastN = o.Count, o.N
					}
				}
			}
			if got := counts(t, dir, e.app, 4); !maps.Equal(got, want) {
				t.Fatalf("state counts %v, want %v", got, want)
			}
			sc.mu.Lock()
			defer sc.mu.Unlock()
			if len(sc.violations) > 0 {
				t.Fatalf("instance order broken: %v", sc.violations[:min(5, len(sc.violations))])
			}
			if m := sc.maxActive.Load(); m < 4 || m > concurrency {
				t.Fatalf("at most %d calls overlapped, want between 4 and the limit %d", m, concurrency)
			}
		})
	}
}

// A handler past its timeout fails the attempt: its context ends, the
// record is retried, and the next attempt (fast) succeeds.
func TestHandlerTimeoutIsAFailedAttempt(t *testing.T) {
	e := newEnv(t, 1)
	e.produce(0, 1, 1)
	cfg := e.config(t.TempDir(), ExactlyOnce)
	cfg.HandlerTimeout = 200 * time.Millisecond
	var calls atomic.Int64
	var sawDeadline atomic.Bool
	s := New[counter](e.app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[counter], ev Tick) error {
		if calls.Add(1) == 1 {
			<-c.Context().Done() // a service that does not answer
			sawDeadline.Store(errors.Is(c.Context().Err(), context.DeadlineExceeded))
			return c.Context().Err()
		}
		return c.Emit("counted", Counted{Count: 1, N: ev.N})
	})
	r := start(t, s, cfg)
	outs := e.counted(1, 20*time.Second)
	if len(outs) != 1 {
		t.Fatalf("%d outputs, want 1", len(outs))
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d calls, want 2 (one timed out, one retry)", got)
	}
	if !sawDeadline.Load() {
		t.Fatal("the timed-out call's context did not end with DeadlineExceeded")
	}
	if got := counterValue(t, r.rt.m.retries); got != 1 {
		t.Fatalf("retries metric %v, want 1", got)
	}
}

// A handler that ignores its context is given up after its timeout: the
// interval still commits in time (no livelock), and the record is retried.
func TestHandlerIgnoringItsContextIsGivenUp(t *testing.T) {
	e := newEnv(t, 1)
	e.produce(0, 2, 2)
	cfg := e.config(t.TempDir(), ExactlyOnce)
	cfg.HandlerTimeout = 150 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var stuck atomic.Bool
	s := New[counter](e.app, "count", Inputs("ticks"))
	Handle(s, func(c *Context[counter], ev Tick) error {
		if ev.N == 0 && stuck.CompareAndSwap(false, true) {
			<-release // ignores its context
		}
		return c.Emit("counted", Counted{Count: 1, N: ev.N})
	})
	r := start(t, s, cfg)
	outs := e.counted(2, 20*time.Second)
	if len(outs) != 2 {
		t.Fatalf("%d outputs, want 2 (the stuck call given up and retried)", len(outs))
	}
	if got := counterValue(t, r.rt.m.retries); got < 1 {
		t.Fatalf("retries metric %v, want at least 1", got)
	}
}

// Records carried over between intervals (slow handlers over a backlog:
// admission ends with records fetched but not started) survive the aborts
// of a rebalance: a second member joins and leaves mid-run, and every input
// is answered exactly once with exact state.
func TestCarriedRecordsSurviveRebalances(t *testing.T) {
	const n, instances, parts = 1500, 50, 4
	e := newEnv(t, parts)
	e.produce(0, n, instances)
	slow := func() *Step[counter] {
		s := New[counter](e.app, "count", Inputs("ticks"))
		Handle(s, func(c *Context[counter], ev Tick) error {
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(3 * time.Millisecond)))):
			case <-c.Context().Done():
				return c.Context().Err()
			}
			st, _ := c.State()
			st.Count++
			c.SetState(st)
			return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
		})
		return s
	}
	cfg := func() Config {
		c := e.config(t.TempDir(), ExactlyOnce)
		c.GroupProtocol = GroupProtocolClassic
		c.Concurrency = 4
		return c
	}
	a := start(t, slow(), cfg())
	a.waitActive(t, parts, 20*time.Second)
	for counterValue(t, a.rt.m.processed) < n/5 {
		time.Sleep(10 * time.Millisecond)
	}
	b := start(t, slow(), cfg()) // a rebalance: partitions move, transactions abort
	for counterValue(t, a.rt.m.processed)+counterValue(t, b.rt.m.processed) < n/2 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.stop(); err != nil { // and back
		t.Fatal(err)
	}
	outs := e.counted(n, 60*time.Second)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, e, outs, wantCounts(n, instances), true)
	if len(outs) != n {
		t.Fatalf("%d outputs for %d inputs", len(outs), n)
	}
	if got, want := e.changelogCounts(e.app), wantCounts(n, instances); !maps.Equal(got, want) {
		t.Fatalf("changelog counts %v, want %v", got, want)
	}
}
