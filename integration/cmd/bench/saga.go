package main

import (
	"context"
	"errors"
	"fmt"
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
// warmUp is left out of the latency figures: the first orders meet cold
// caches and fetch sessions.
const warmUp = 2 * time.Second

var topicName = regexp.MustCompile(`(?m)^(\s*- name: )(\S+)(\n\s+events:)`)

// sagaBench runs the example saga (its three steps and its coordinator, in
// this process, exactly-once as the topology says) and offers orders that
// complete at a steady rate; it measures each order's time from its produce
// to its SagaEnded being readable (read_committed), and how many of the
// offered orders completed.
func (b *bench) sagaBench(ctx context.Context) error {
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
	gu, err := runner.GuaranteeOf(t, "")
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
	runErrs := make(chan error, len(runs))
	for _, run := range runs {
		wg.Go(func() {
			if err := run(rctx); err != nil && !errors.Is(err, context.Canceled) {
				runErrs <- err
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	if err := waitReady(ctx, env.Server, 2*time.Minute); err != nil {
		return err
	}

	// Read SagaEnded as it comes.
	type end struct {
		at     time.Time
		status string
	}
	var mu sync.Mutex
	ends := map[string]end{}
	rd, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ConsumeTopics(t.EndedTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer rd.Close()
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		for readCtx.Err() == nil {
			fs := rd.PollFetches(readCtx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				_, v, err := env.Serde.Decode(readCtx, r.Value)
				status := "undecodable"
				if e, ok := v.(saga.Ended); ok && err == nil {
					status = e.Status
				}
				mu.Lock()
				ends[string(r.Key)] = end{at: now, status: status}
				mu.Unlock()
			})
		}
	}()

	// Offer orders at the rate, each produced synchronously in its slot.
	trigger, _ := t.TopicOf(t.Trigger)
	sent := map[string]time.Time{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / b.sagaRate))
	defer tick.Stop()
	start := time.Now()
	deadline := start.Add(b.sagaFor)
	var produceErr error
	var pmu sync.Mutex
	for n := 0; time.Now().Before(deadline); n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-runErrs:
			return err
		case <-tick.C:
		}
		oid := fmt.Sprintf("bench-%06d", n)
		rec, err := orders.Record(ctx, env.Serde, trigger, orders.NewOrder(oid, orders.OutcomeCompleted, time.Now()), "bench")
		if err != nil {
			return err
		}
		sent[oid] = time.Now()
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				pmu.Lock()
				produceErr = err
				pmu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil || produceErr != nil {
		return errors.Join(err, produceErr)
	}
	// Wait for the stragglers, up to the saga's deadline and then some.
	grace := time.Now().Add(t.Deadline + 10*time.Second)
	for time.Now().Before(grace) {
		mu.Lock()
		done := len(ends) >= len(sent)
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopRead()
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	completed := 0
	for oid, at := range sent {
		e, ok := ends[oid]
		if !ok || e.status != string(saga.Completed) {
			continue
		}
		completed++
		if at.Sub(start) >= warmUp {
			lat = append(lat, e.at.Sub(at))
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("none of %d orders completed", len(sent))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.rows = append(b.rows, &row{
		name:   "saga",
		figure: fmt.Sprintf("p50 %s · p99 %s · p99.9 %s", ms(q(0.50)), ms(q(0.99)), ms(q(0.999))),
		vs:     fmt.Sprintf("%d/%d completed (%.1f%%)", completed, len(sent), 100*float64(completed)/float64(len(sent))),
		note: fmt.Sprintf("%.0f orders/s offered for %s (latency of those after the first %s); order produced → SagaEnded readable; 3 steps + coordinator in one process, exactly-once, 4 events + 1 SagaEnded per order",
			b.sagaRate, b.sagaFor, warmUp),
	})
	return nil
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
