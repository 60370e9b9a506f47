package runner

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/tracing"
	"github.com/troupehq/troupe/pkg/tracing/tracingtest"
)

// TestDevTraces: troupe dev with OTEL_EXPORTER_OTLP_ENDPOINT set exports
// one trace per saga, across its three steps and the coordinator, whose
// API names it: for an order from a traced producer, the producer's trace;
// for one from a producer that does not trace, the trace derived from the
// saga id.
func TestDevTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	rcv := tracingtest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL())
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), SummaryEvery: time.Minute, Out: &syncBuffer{},
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
	prod, err := tracing.FromEnv(ctx, tracing.Options{Service: "test-producer"})
	if err != nil {
		t.Fatal(err)
	}
	brokers := kafka.Config{Brokers: []string{"127.0.0.1:" + strconv.Itoa(o.KafkaPort)}}
	traced, err := kafka.NewClient(ctx, brokers, prod.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer traced.Close()
	plain, err := kafka.NewClient(ctx, brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	send := func(cl *kgo.Client, id string) *kgo.Record {
		t.Helper()
		v, err := serde.EncodeJSON(ctx, "orders", orders.Namespace+".OrderPlaced", []byte(`{"orderId":"`+id+`","customerId":"c","amountCents":100,"currency":"EUR",
			"items":[{"sku":"A","quantity":1}],"shipTo":{"name":"n","line1":"l","city":"c","country":"GB"},"placedAt":"2026-01-02T03:04:05Z"}`))
		if err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: "orders", Key: []byte(id), Value: v, Headers: event.New(orders.Namespace+".OrderPlaced", "test", id).Headers()}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := send(traced, "trace-1")
	tp, _ := event.Header(r, event.HeaderTraceParent)
	if len(tp) != 55 {
		t.Fatalf("the traced producer's record has traceparent %q", tp)
	}
	want := map[string]string{"trace-1": tp[3:35], "trace-2": step.SagaSpanContext("trace-2").TraceID().String()}
	send(plain, "trace-2")
	if err := prod.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	for id, tid := range want {
		var inst struct{ Status, TraceID string }
		for inst.Status != "COMPLETED" {
			if ctx.Err() != nil {
				t.Fatalf("saga %s is %q after 90 s, want COMPLETED", id, inst.Status)
			}
			if resp, err := http.Get("http://" + o.HTTP + "/api/sagas/" + id); err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&inst)
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
		if inst.TraceID != tid {
			t.Errorf("saga %s: API traceId %q, want %q", id, inst.TraceID, tid)
		}
	}

	// Each step's call and the coordinator's for the trigger and the
	// completing event, in the saga's trace.
	calls := []string{"orders.payment process OrderPlaced", "orders.inventory process PaymentAuthorized",
		"orders.shipping process InventoryReserved", "orders.saga.order-fulfillment process OrderPlaced",
		"orders.saga.order-fulfillment process ShipmentScheduled"}
	for id, tid := range want {
		missing := calls
		for len(missing) > 0 && ctx.Err() == nil {
			seen := map[string]bool{}
			for _, s := range rcv.Spans() {
				if s.TraceID == tid && s.Attrs["troupe.saga_id"] == id {
					seen[s.Name] = true
				}
			}
			missing = nil
			for _, c := range calls {
				if !seen[c] {
					missing = append(missing, c)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(missing) > 0 {
			t.Errorf("saga %s: no span %v in its trace %s", id, missing, tid)
		}
	}
}
