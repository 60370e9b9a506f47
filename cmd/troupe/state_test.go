package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/state"
)

// writeChangelog creates topic with 2 partitions and writes n records to
// each, keys k<p>-<i>.
func writeChangelog(t *testing.T, ctx context.Context, brokers, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for p := range int32(2) {
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i), Value: fmt.Appendf(nil, "v%d", i)})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func checkStore(t *testing.T, dir, app, step string, n int) {
	t.Helper()
	s, err := state.Open(dir, state.Options{App: app, Step: step})
	if err != nil {
		t.Fatalf("open rebuilt store %s: %v", dir, err)
	}
	defer s.Close()
	for p := range int32(2) {
		for i := range n {
			v, ok, err := s.Get(p, fmt.Appendf(nil, "k%d-%d", p, i))
			if err != nil || !ok || string(v) != fmt.Sprintf("v%d", i) {
				t.Errorf("rebuilt store %s: partition %d key k%d-%d = %q, %v, %v; want v%d", dir, p, p, i, v, ok, err, i)
			}
		}
	}
}

// TestStateRebuildDefaults: with only --step, the app comes from the
// topology and the state dir is troupe run's default,
// .troupe/state/<app>.<step>; the coordinator is a step too.
func TestStateRebuildDefaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, err := filepath.Abs(testTopology)
	if err != nil {
		t.Fatal(err)
	}
	broker, _ := dlqTestCluster(t, ctx)
	writeChangelog(t, ctx, broker, "orders.payment.changelog", 3)
	writeChangelog(t, ctx, broker, "orders.saga.order-fulfillment.changelog", 2)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "topology"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(topo)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "topology", "orders.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	expect := func(wantCode int, want []string, args ...string) {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, "--brokers", broker)...)
		if code != wantCode {
			t.Fatalf("troupe %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(out+errs, w) {
				t.Errorf("troupe %s: output does not mention %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, out, errs)
			}
		}
	}
	expect(exitOK, []string{"rebuilt .troupe/state/orders.payment from orders.payment.changelog: 2 partitions, 6 records"}, "state", "rebuild", "--step", "payment")
	checkStore(t, filepath.Join(dir, ".troupe", "state", "orders.payment"), "orders", "payment", 3)
	expect(exitOK, []string{"rebuilt .troupe/state/orders.saga.order-fulfillment from orders.saga.order-fulfillment.changelog: 2 partitions, 4 records"},
		"state", "rebuild", "--coordinator", "order-fulfillment")
	checkStore(t, filepath.Join(dir, ".troupe", "state", "orders.saga.order-fulfillment"), "orders", "saga.order-fulfillment", 2)

	expect(exitUsage, []string{`unknown step "paymnet" (did you mean payment?)`}, "state", "rebuild", "--step", "paymnet")
	expect(exitUsage, []string{"needs --step NAME", "--coordinator order-fulfillment"}, "state", "rebuild")
	expect(exitUsage, []string{"--data-dir goes with --dev"}, "state", "rebuild", "--step", "payment", "--data-dir", "x")

	// No topology: --app is needed.
	if err := os.Remove(filepath.Join(dir, "topology", "orders.yaml")); err != nil {
		t.Fatal(err)
	}
	expect(exitUsage, []string{"--app is required (no topology at topology/orders.yaml"}, "state", "rebuild", "--step", "payment")
	expect(exitOK, []string{"rebuilt x from orders.payment.changelog"}, "state", "rebuild", "--step", "payment", "--app", "orders", "--state-dir", "x")
}

// TestStateRebuildDev: --dev rebuilds from the broker data a stopped troupe
// dev left in its --data-dir.
func TestStateRebuildDev(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := t.TempDir()
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{DataDir: filepath.Join(data, "kafka")})
	if err != nil {
		t.Fatal(err)
	}
	writeChangelog(t, ctx, broker.Addr(), "orders.inventory.changelog", 4)
	broker.Close() // dev stopped

	run := func(wantCode int, want string, args ...string) {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, "--topology", testTopology)...)
		if code != wantCode || !strings.Contains(out+errs, want) {
			t.Fatalf("troupe %s: exit %d, want %d and %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, want, out, errs)
		}
	}
	stateDir := filepath.Join(data, "state", "orders.inventory")
	run(exitOK, "rebuilt "+stateDir+" from orders.inventory.changelog: 2 partitions, 8 records", "state", "rebuild", "--step", "inventory", "--dev", "--data-dir", data)
	checkStore(t, stateDir, "orders", "inventory", 4)

	// While dev runs (it holds the lock of its data dir), --dev refuses.
	unlock, err := runner.LockDataDir(data)
	if err != nil {
		t.Fatal(err)
	}
	run(exitUsage, "data dir "+data+" is in use by another troupe dev", "state", "rebuild", "--step", "inventory", "--dev", "--data-dir", data)
	unlock()
	run(exitUsage, "holds no troupe dev broker data", "state", "rebuild", "--step", "inventory", "--dev", "--data-dir", t.TempDir())
}
