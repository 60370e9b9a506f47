package runner

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
)

// scrape reads the text exposition of /metrics on addr.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// series flattens family name's series into "label=value,..." → value, the
// labels named in keep only, in that order; series with the same kept
// labels are summed. A histogram's value is its count.
func series(mfs map[string]*dto.MetricFamily, name string, keep ...string) map[string]float64 {
	out := map[string]float64{}
	mf := mfs[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		var parts []string
		for _, k := range keep {
			for _, l := range m.GetLabel() {
				if l.GetName() == k {
					parts = append(parts, k+"="+l.GetValue())
				}
			}
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Histogram != nil:
			v = float64(m.Histogram.GetSampleCount())
		}
		out[strings.Join(parts, ",")] += v
	}
	return out
}

// nonZero drops the zero entries of m: a series at 0 and one not exported
// are the same count.
func nonZero(m map[string]float64) map[string]float64 {
	maps.DeleteFunc(m, func(_ string, v float64) bool { return v == 0 })
	return m
}

// devWorkload is a known mix of the example's outcomes. Each saga ends
// within milliseconds but the dead-lettered one, which stays RUNNING (held
// by its dead letter) until its deadline, 10 min on the test's topology: a
// deadline short enough to pass in the test would time out sagas that a
// loaded machine runs slowly, and change the counts.
var devWorkload = map[orders.Outcome]int{
	orders.OutcomeCompleted:    6,
	orders.OutcomeDeclined:     2,
	orders.OutcomeOutOfStock:   2,
	orders.OutcomeShipFailed:   2,
	orders.OutcomeDeadLettered: 1,
}

// fastTopology writes the example's topology with a 10 min deadline and 3
// handler attempts (an ERR- order is dead-lettered sooner).
func fastTopology(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, repl := range map[string]string{
		"deadline: 30s":                    "deadline: 10m",
		"attempts: 5\n  initial_backoff: ": "attempts: 3\n  initial_backoff: ",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("topology/orders.yaml has no %q to shorten", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	p := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const devAttempts = 3 // fastTopology's retry attempts

// troupe dev runs a known workload (devWorkload); its /metrics then equal
// the work: events by step and outcome, sagas started, by status and by
// duration count, compensations, dead letters and retries, and consumer lag
// 0 on every partition once everything is consumed. Every series that
// deploy/'s dashboard and alert rules name is among those it exports.
func TestDevMetricsEqualTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), Topology: fastTopology(t), SummaryEvery: time.Minute, Out: &syncBuffer{},
	}
	stop := startDev(t, o)
	defer stop()
	waitReady(t, o.HTTP)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rc, err := avro.NewRegistryClient("http://127.0.0.1:" + strconv.Itoa(o.RegistryPort))
	if err != nil {
		t.Fatal(err)
	}
	serde := avro.NewSerde(rc)
	if err := orders.Register(serde); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(ctx, kafka.Config{Brokers: []string{"127.0.0.1:" + strconv.Itoa(o.KafkaPort)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, oc := range slices.Sorted(maps.Keys(devWorkload)) {
		for i := range devWorkload[oc] {
			r, err := orders.Record(ctx, serde, orders.TopicOrders, orders.NewOrder(fmt.Sprintf("m-%s-%d", oc, i), oc, time.Now()), "test")
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// What the workload must give, from the example's rules (package
	// orders and topology/orders.yaml).
	w := devWorkload
	n := float64(len(recs))
	completed := float64(w[orders.OutcomeCompleted])
	declined := float64(w[orders.OutcomeDeclined])
	oos := float64(w[orders.OutcomeOutOfStock])
	shipFailed := float64(w[orders.OutcomeShipFailed])
	dead := float64(w[orders.OutcomeDeadLettered])
	// A payment taken is refunded when a later step fails (an ERR- order's
	// saga is still running); inventory is released where it was reserved
	// and shipping failed.
	refunds := oos + shipFailed
	releases := shipFailed
	authorized := n - declined
	reserved := completed + shipFailed
	ended := n - dead
	wantEvents := map[string]float64{
		// OrderPlaced, RefundPayment; every step reads every SagaEnded.
		"step=payment,outcome=processed": n + refunds,
		"step=payment,outcome=ended":     ended,
		"step=payment,outcome=ignored":   releases, // ReleaseInventory
		// PaymentAuthorized but the ERR- ones, which fail every attempt,
		// and ReleaseInventory.
		"step=inventory,outcome=processed": authorized - dead + releases,
		"step=inventory,outcome=error":     dead,
		"step=inventory,outcome=ended":     ended,
		// PaymentDeclined, PaymentRefunded, RefundPayment.
		"step=inventory,outcome=ignored":  declined + 2*refunds,
		"step=shipping,outcome=processed": reserved,
		"step=shipping,outcome=ended":     ended,
		"step=shipping,outcome=ignored":   oos + releases, // OutOfStock, InventoryReleased
		// The coordinator reads every event of the business topics (the
		// commands it sent included) and the dead letters of the DLQs.
		"step=saga.order-fulfillment,outcome=processed": n + // OrderPlaced
			authorized + declined + refunds + // payments
			reserved + oos + releases + // inventory
			completed + shipFailed + // shipping
			refunds + releases + // compensations
			dead, // inventory's DLQ
	}
	wantSagas := map[string]float64{"status=COMPLETED": completed, "status=COMPENSATED": ended - completed, "status=RUNNING": dead}
	wantDurations := map[string]float64{"outcome=COMPLETED": completed, "outcome=COMPENSATED": ended - completed}
	wantComps := map[string]float64{
		"step=payment,outcome=sent": refunds, "step=payment,outcome=acked": refunds,
		"step=inventory,outcome=sent": releases, "step=inventory,outcome=acked": releases,
	}
	wantDead := map[string]float64{"step=inventory": dead}
	wantRetries := map[string]float64{"step=inventory": dead * (devAttempts - 1)}

	type check struct {
		what string
		got  func(map[string]*dto.MetricFamily) map[string]float64
		want map[string]float64
	}
	checks := []check{
		// Duplicates are left out: a retry rewinds its partition to the
		// failing record, and records of other instances behind it that
		// were handled meanwhile come again (how many depends on what
		// the fetch held). That they are dropped, not handled twice,
		// is what the processed counts show; where they come from is
		// checked below.
		{"troupe_step_events_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			ev := nonZero(series(m, "troupe_step_events_total", "step", "outcome"))
			maps.DeleteFunc(ev, func(k string, _ float64) bool { return strings.HasSuffix(k, ",outcome=duplicate") })
			return ev
		}, wantEvents},
		{"troupe_saga_overdue_instances", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_saga_overdue_instances", "saga"))
		}, map[string]float64{}},
		{"troupe_saga_started_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return series(m, "troupe_saga_started_total", "saga")
		}, map[string]float64{"saga=order-fulfillment": n}},
		{"troupe_saga_instances", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_saga_instances", "status"))
		}, wantSagas},
		{"troupe_saga_duration_seconds (count)", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_saga_duration_seconds", "outcome"))
		}, wantDurations},
		{"troupe_saga_compensations_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_saga_compensations_total", "step", "outcome"))
		}, wantComps},
		{"troupe_step_dead_letters_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_step_dead_letters_total", "step"))
		}, wantDead},
		{"troupe_step_retries_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_step_retries_total", "step"))
		}, wantRetries},
		{"troupe_saga_orphans_total", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_saga_orphans_total", "type"))
		}, map[string]float64{}},
		{"troupe_step_consumer_lag", func(m map[string]*dto.MetricFamily) map[string]float64 {
			return nonZero(series(m, "troupe_step_consumer_lag", "step", "topic", "partition"))
		}, map[string]float64{}},
	}
	// Counters lag the work by a commit, and the saga instances gauge is
	// counted every 5 s: wait for them all to agree.
	var mfs map[string]*dto.MetricFamily
	deadline := time.Now().Add(60 * time.Second)
	for {
		mfs = scrape(t, o.HTTP)
		// The counters count what committed: an aborted interval's
		// records, handled again, count once (aborts are logged for the
		// diagnosis of a failure).
		var bad []string
		for _, c := range checks {
			if got := c.got(mfs); !maps.Equal(got, c.want) {
				bad = append(bad, fmt.Sprintf("%s: %v, want %v", c.what, got, c.want))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, metrics that do not equal the work (%v; transaction aborts %v):\n%s", w,
				nonZero(series(mfs, "troupe_step_transaction_aborts_total", "step")), strings.Join(bad, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(series(mfs, "troupe_step_consumer_lag", "step", "topic", "partition")) == 0 {
		t.Fatal("no troupe_step_consumer_lag series at all")
	}
	// Every series the dashboard and the alert rules name is one of these.
	if missing := unexported(namedMetrics(t), mfs); len(missing) > 0 {
		t.Errorf("deploy/ names series that troupe dev does not export: %s", strings.Join(missing, ", "))
	}
	for k := range nonZero(series(mfs, "troupe_step_events_total", "step", "outcome")) {
		if st, ok := strings.CutSuffix(k, ",outcome=duplicate"); ok && wantRetries[st] == 0 {
			t.Errorf("duplicates at %s, which retried nothing: %v", st, series(mfs, "troupe_step_events_total", "step", "outcome"))
		}
	}
}
