package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
	topologies "github.com/troupehq/troupe/topology"
)

// topicName matches the name of a topic entry (a step's entry has "on:"
// next, not "events:").
var topicName = regexp.MustCompile(`(?m)^(\s*- name: )(\S+)(\n\s+events:)`)

const (
	// settle is left out of each steady phase's figures: the change of
	// rate from the phase before.
	settle = 2 * time.Second
	// warmRate is the rate of the first phase, from ready.
	warmRate = 200
	// p99Goal is the latency the highest sustainable rate is searched for.
	p99Goal = time.Second
)

// sagaEnd is when a saga's SagaEnded was read, and its status.
type sagaEnd struct {
	at     time.Time
	status string
}

// sagaRun is the example saga running in this process, with a reader of
// its SagaEnded records and a producer of orders.
type sagaRun struct {
	b       *bench
	env     *runner.Env
	cl      *kgo.Client
	trigger string
	runErrs chan error
	grace   time.Duration // how long the stragglers of a phase are waited for

	mu   sync.Mutex
	ends map[string]sagaEnd
}

// offered is one order: its id and when it was produced.
type offered struct {
	id string
	at time.Time
}

// phase is one stretch of orders at a rate, and what became of them.
type phase struct {
	rate    float64 // offered
	actual  float64 // orders/s actually produced
	start   time.Time
	orders  []offered
	drained bool // every order ended before the grace ran out
}

// sagaBench runs the example saga (its three steps and its coordinator, in
// this process, at-least-once or exactly-once) and offers orders that
// complete, measuring each order's time from its produce to its SagaEnded
// being readable (read_committed):
//
//   - warm-up: warmRate orders/s from the moment every part reports ready,
//     for -saga-warmup; reported apart: when latency settles, and the
//     worst saga;
//   - steady: one phase per -saga-rates, each for -saga-for, its first
//     settle seconds not counted: p50/p99/p99.9 and completed/offered;
//   - the highest offered rate whose p99 (an order that does not complete
//     counting as infinitely slow) stays under p99Goal: the steady phases,
//     then two probes above the highest that passed.
func (b *bench) sagaBench(ctx context.Context, eos bool) error {
	name, gflag := "saga-alos", "at_least_once"
	if eos {
		name, gflag = "saga-eos", "exactly_once"
	}
	id := time.Now().UnixNano()
	yaml := topicName.ReplaceAllString(string(topologies.Orders), fmt.Sprintf("${1}b%d-${2}${3}", id))
	yaml = regexp.MustCompile(`(?m)^app: orders$`).ReplaceAllString(yaml, fmt.Sprintf("app: bench%d", id))
	yaml = regexp.MustCompile(`(?m)^partitions: \d+$`).ReplaceAllString(yaml, fmt.Sprintf("partitions: %d", b.partitions))
	t, err := topology.Parse("orders.yaml (bench)", []byte(yaml))
	if err != nil {
		return err
	}
	dir, err := tempDir("saga")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kcfg := kafka.Config{Brokers: b.brokers, Logger: b.log}

	// The built-in registry, on its own topic.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	stopReg, err := runner.ServeRegistry(ctx, registry.Config{Kafka: kcfg, Topic: fmt.Sprintf("_schemas-bench%d", id)}, ln, b.log)
	if err != nil || ctx.Err() != nil {
		return errors.Join(err, ctx.Err())
	}
	defer stopReg()
	if err := runner.ApplyTopics(ctx, kcfg, t); err != nil {
		return err
	}
	cl, err := kafka.NewClient(ctx, kcfg, kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	app := runner.App{Name: "bench", Types: orders.Register, Steps: orders.Steps}
	env, err := runner.NewEnv(app, kcfg, "http://"+ln.Addr().String(), "bench", b.log)
	if err != nil {
		return err
	}
	gu, err := runner.GuaranteeOf(t, gflag)
	if err != nil {
		return err
	}
	var runs []func(context.Context) error
	defs := orders.Steps(t)
	for _, name := range t.StepNames() {
		rt, err := env.NewStep(t, defs[name], name, runner.StepOptions{StateDir: filepath.Join(dir, name), Guarantee: gu})
		if err != nil {
			return err
		}
		runs = append(runs, rt.Run)
	}
	coord, _, err := env.NewCoordinator(t, runner.StepOptions{StateDir: filepath.Join(dir, "coordinator"), Guarantee: gu})
	if err != nil {
		return err
	}
	runs = append(runs, coord.Run)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	s := &sagaRun{b: b, env: env, cl: cl, runErrs: make(chan error, len(runs)), ends: map[string]sagaEnd{}, grace: t.Deadline + 10*time.Second}
	s.trigger, _ = t.TopicOf(t.Trigger)
	started := time.Now()
	for _, run := range runs {
		wg.Go(func() {
			if err := run(rctx); err != nil && !errors.Is(err, context.Canceled) {
				s.runErrs <- err
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	// Read SagaEnded as it comes, from before ready.
	rd, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ConsumeTopics(t.EndedTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer rd.Close()
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go s.read(readCtx, rd)

	if err := waitReady(ctx, env.Server, 2*time.Minute); err != nil {
		return err
	}
	readyAt := time.Now()
	ready := readyAt.Sub(started)

	warm, err := s.offer(ctx, "warm", warmRate, b.sagaWarm)
	if err != nil {
		return err
	}
	var steady []*phase
	for _, rate := range b.sagaRates {
		p, err := s.offer(ctx, fmt.Sprintf("r%.0f", rate), rate, b.sagaFor)
		if err != nil {
			return err
		}
		steady = append(steady, p)
	}
	// The search: the steady phases in order, then two probes above the
	// highest rate that passed (below the lowest that failed).
	passed := func(p *phase) bool { return s.p99All(p) < p99Goal }
	var lo, hi float64
	var probes []*phase
	for _, p := range steady {
		if !passed(p) {
			hi = p.rate
			break
		}
		lo = p.rate
	}
	for range 2 {
		next := 2 * lo
		switch {
		case lo == 0 && hi > 0:
			next = hi / 2
		case hi > 0:
			next = (lo + hi) / 2
		}
		if next <= 0 || (hi > 0 && hi-lo < 0.1*hi) {
			break
		}
		next = math.Round(next/10) * 10
		p, err := s.offer(ctx, fmt.Sprintf("probe%.0f", next), next, b.sagaFor)
		if err != nil {
			return err
		}
		probes = append(probes, p)
		if passed(p) {
			lo = next
		} else {
			hi = next
		}
	}
	stopRead()

	// Rows: the steady phases, the warm-up, the search.
	g := "at-least-once"
	if eos {
		g = "exactly-once"
	}
	params := func(p *phase) map[string]any {
		return map[string]any{"guarantee": gflag, "offered_per_s": p.rate, "actual_per_s": math.Round(p.actual*10) / 10, "phase_s": b.sagaFor.Seconds(), "settle_s": settle.Seconds()}
	}
	var ref *phase // the steady phase at the warm-up's rate, or the nearest
	for _, p := range steady {
		lat, done, n := s.latencies(p, settle)
		if ref == nil || math.Abs(p.rate-warmRate) < math.Abs(ref.rate-warmRate) {
			ref = p
		}
		row := &row{
			name: fmt.Sprintf("%s %.0f/s", name, p.rate),
			vs:   fmt.Sprintf("%d/%d completed (%.1f%%)", done, n, 100*float64(done)/float64(max(n, 1))),
			note: fmt.Sprintf("steady state: %.0f orders/s offered (%.0f produced) for %s, the first %s not counted; order produced → SagaEnded readable; 3 steps + coordinator in one process, %s, 4 events + 1 SagaEnded per order",
				p.rate, p.actual, b.sagaFor, settle, g),
		}
		if !p.drained {
			row.note += fmt.Sprintf("; not all ended within %s", s.grace)
		}
		if len(lat) == 0 {
			row.figure = "none completed"
		} else {
			row.figure = fmt.Sprintf("p50 %s · p99 %s · p99.9 %s", ms(q(lat, 0.5)), ms(q(lat, 0.99)), ms(q(lat, 0.999)))
			for _, x := range []struct {
				m string
				p float64
			}{{"latency_p50", 0.5}, {"latency_p99", 0.99}, {"latency_p999", 0.999}} {
				b.record(name, x.m, msf(q(lat, x.p)), "ms", params(p))
			}
		}
		b.record(name, "completed_over_offered", float64(done)/float64(max(n, 1)), "ratio", params(p))
		b.rows = append(b.rows, row)
	}

	// The warm-up: when latency settles, against the steady p99 at its rate.
	wl, wdone, wn := s.latencies(warm, 0)
	refLat, _, _ := s.latencies(ref, settle)
	if len(wl) > 0 && len(refLat) > 0 {
		refP99 := q(refLat, 0.99)
		bound := 2 * refP99
		var ws []sent
		s.mu.Lock()
		for _, o := range warm.orders {
			w := sent{at: o.at.Sub(readyAt), lat: never}
			if e, ok := s.ends[o.id]; ok && e.status == string(saga.Completed) {
				w.lat = e.at.Sub(o.at)
			}
			ws = append(ws, w)
		}
		s.mu.Unlock()
		settledAt, worst, worstAt := settling(ws, bound)
		var bySec []string
		for i, bk := range bySecond(ws) {
			bySec = append(bySec, fmt.Sprintf("%d s: p50 %s max %s", i, msOrNever(bk.p50), msOrNever(bk.max)))
			sp := map[string]any{"guarantee": gflag, "second_after_ready": i}
			if bk.max != never {
				b.record(name+"-warmup", "latency_max_by_second", msf(bk.max), "ms", sp)
			}
			if bk.p50 != never {
				b.record(name+"-warmup", "latency_p50_by_second", msf(bk.p50), "ms", sp)
			}
		}
		fmt.Fprintf(os.Stderr, "bench: %s warm-up, by second of sending after ready: %s\n", name, strings.Join(bySec, " · "))
		worstS := ms(worst)
		if worst == never {
			worstS = "did not complete"
		}
		steadyS := fmt.Sprintf("steady after %.1f s", settledAt.Seconds())
		if settledAt > b.sagaWarm*9/10 {
			steadyS = fmt.Sprintf("not steady within %s", b.sagaWarm)
		}
		b.rows = append(b.rows, &row{
			name:   name + " warm-up",
			figure: fmt.Sprintf("%s · worst saga %s (sent %.1f s after ready) · p99 %s", steadyS, worstS, worstAt.Seconds(), ms(q(wl, 0.99))),
			vs:     fmt.Sprintf("%d/%d completed; ready %.1f s after start", wdone, wn, ready.Seconds()),
			note: fmt.Sprintf("%d orders/s for the first %s after every part reports ready; steady = no later order slower than 2× the steady p99 at %.0f/s (%s)",
				warmRate, b.sagaWarm, ref.rate, ms(refP99)),
		})
		wp := map[string]any{"guarantee": gflag, "offered_per_s": warmRate, "window_s": b.sagaWarm.Seconds(), "steady_bound_ms": msf(bound)}
		b.record(name+"-warmup", "time_to_steady", settledAt.Seconds(), "s", wp)
		if worst != never {
			b.record(name+"-warmup", "worst_latency", msf(worst), "ms", wp)
		}
		b.record(name+"-warmup", "latency_p99", msf(q(wl, 0.99)), "ms", wp)
		b.record(name+"-warmup", "completed_over_offered", float64(wdone)/float64(max(wn, 1)), "ratio", wp)
		b.record(name, "ready_after_start", ready.Seconds(), "s", map[string]any{"guarantee": gflag})
	}

	// The search.
	var tried []string
	for _, p := range append(slices.Clone(steady), probes...) {
		mark := "✓"
		if !passed(p) {
			mark = "✗"
		}
		tried = append(tried, fmt.Sprintf("%.0f %s (p99 %s)", p.rate, mark, msOrNever(s.p99All(p))))
	}
	fig := fmt.Sprintf("%.0f orders/s", lo)
	switch {
	case lo == 0:
		fig = fmt.Sprintf("below %.0f orders/s", hi)
	case hi == 0:
		fig = fmt.Sprintf("≥ %.0f orders/s (none probed failed)", lo)
	}
	b.rows = append(b.rows, &row{
		name:   name + " max rate",
		figure: fig + " with p99 < 1 s",
		vs:     "probed: " + strings.Join(tried, ", "),
		note:   fmt.Sprintf("highest offered rate whose steady p99 (an order not completed counts as infinitely slow) stays under 1 s; each probe %s", b.sagaFor),
	})
	b.record(name, "max_rate_p99_under_1s", lo, "orders/s", map[string]any{"guarantee": gflag, "lowest_failed": hi})
	return nil
}

// never is the latency of an order that did not complete.
const never = time.Duration(math.MaxInt64)

// sent is an order of the warm-up: when it was sent (since ready), and its
// latency (never if it did not complete).
type sent struct{ at, lat time.Duration }

// settling says when the latency of orders (in the order they were sent)
// settled: the send time of the last order slower than bound (0 if none
// was), and the worst order and when it was sent.
func settling(orders []sent, bound time.Duration) (settledAt, worst, worstAt time.Duration) {
	for _, o := range orders {
		if o.lat > bound {
			settledAt = o.at
		}
		if o.lat > worst {
			worst, worstAt = o.lat, o.at
		}
	}
	return settledAt, worst, worstAt
}

// bucket is the latency of the orders sent in one second.
type bucket struct{ p50, max time.Duration }

// bySecond groups orders by the second they were sent in.
func bySecond(orders []sent) []bucket {
	var lats [][]time.Duration
	for _, o := range orders {
		i := int(o.at / time.Second)
		for len(lats) <= i {
			lats = append(lats, nil)
		}
		lats[i] = append(lats[i], o.lat)
	}
	out := make([]bucket, len(lats))
	for i, l := range lats {
		if len(l) == 0 {
			out[i] = bucket{never, never}
			continue
		}
		slices.Sort(l)
		out[i] = bucket{p50: q(l, 0.5), max: l[len(l)-1]}
	}
	return out
}

// read keeps when each saga's SagaEnded was read.
func (s *sagaRun) read(ctx context.Context, rd *kgo.Client) {
	for ctx.Err() == nil {
		fs := rd.PollFetches(ctx)
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			_, v, err := s.env.Serde.Decode(ctx, r.Value)
			status := "undecodable"
			if e, ok := v.(saga.Ended); ok && err == nil {
				status = e.Status
			}
			s.mu.Lock()
			s.ends[string(r.Key)] = sagaEnd{at: now, status: status}
			s.mu.Unlock()
		})
	}
}

// offer produces orders that complete at rate for d, each at its slot
// (late slots are caught up at once, so the offered count holds), then
// waits for their sagas to end, up to s.grace.
func (s *sagaRun) offer(ctx context.Context, prefix string, rate float64, d time.Duration) (*phase, error) {
	fmt.Fprintf(os.Stderr, "bench: saga %s: %.0f orders/s for %s\n", prefix, rate, d)
	p := &phase{rate: rate, start: time.Now()}
	var pmu sync.Mutex
	var produceErr error
	every := time.Duration(float64(time.Second) / rate)
	for n := 0; ; n++ {
		due := p.start.Add(time.Duration(n) * every)
		if due.Sub(p.start) >= d {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-s.runErrs:
			return nil, err
		default:
		}
		oid := fmt.Sprintf("bench-%s-%06d", prefix, n)
		rec, err := orders.Record(ctx, s.env.Serde, s.trigger, orders.NewOrder(oid, orders.OutcomeCompleted, time.Now()), "bench")
		if err != nil {
			return nil, err
		}
		p.orders = append(p.orders, offered{oid, time.Now()})
		s.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				pmu.Lock()
				produceErr = err
				pmu.Unlock()
			}
		})
	}
	p.actual = float64(len(p.orders)) / max(time.Since(p.start).Seconds(), 1e-3)
	if err := s.cl.Flush(ctx); err != nil {
		return nil, err
	}
	pmu.Lock()
	err := produceErr
	pmu.Unlock()
	if err != nil {
		return nil, err
	}
	// Wait for the stragglers, up to the saga's deadline and then some.
	grace := time.Now().Add(s.grace)
	for time.Now().Before(grace) && !p.drained {
		s.mu.Lock()
		p.drained = true
		for _, o := range p.orders {
			if _, ok := s.ends[o.id]; !ok {
				p.drained = false
				break
			}
		}
		s.mu.Unlock()
		if !p.drained {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return p, nil
}

// latencies are the sorted latencies of p's completed orders produced
// after skip, how many of those completed, and how many were offered.
func (s *sagaRun) latencies(p *phase, skip time.Duration) (lat []time.Duration, completed, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range p.orders {
		if o.at.Sub(p.start) < skip {
			continue
		}
		n++
		if e, ok := s.ends[o.id]; ok && e.status == string(saga.Completed) {
			completed++
			lat = append(lat, e.at.Sub(o.at))
		}
	}
	slices.Sort(lat)
	return lat, completed, n
}

// p99All is p's steady p99 with every order that did not complete counted
// as infinitely slow.
func (s *sagaRun) p99All(p *phase) time.Duration {
	lat, done, n := s.latencies(p, settle)
	for range n - done {
		lat = append(lat, never)
	}
	if len(lat) == 0 {
		return never
	}
	return q(lat, 0.99)
}

// q is the p-quantile of sorted lat.
func q(lat []time.Duration, p float64) time.Duration {
	return lat[min(len(lat)-1, int(p*float64(len(lat))))]
}

func msf(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

func msOrNever(d time.Duration) string {
	if d == never {
		return "not all completed"
	}
	return ms(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// waitReady waits until every part of the process reports ready.
func waitReady(ctx context.Context, srv *api.Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready after %s: %s", timeout, strings.TrimSpace(rec.Body.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tempDir(name string) (string, error) { return os.MkdirTemp("", "troupe-bench-"+name+"-") }
