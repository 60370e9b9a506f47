package integration

import (
	"context"
	"hash/crc32"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
)

// librdkafka's default partitioner (kcat, confluent-kafka for Python, Go,
// .NET) places a key by CRC32, troupe by murmur2: most orders placed that
// way land in another partition than the rest of their saga. Each must
// still be one saga that ends as the README's example saga says, with every charge
// refunded where payment was compensated, and one SagaEnded per order.
func TestSagaOrdersPlacedByCRC32(t *testing.T) {
	e := newSagaEnv(t, "5s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	coord := e.startStep("coordinator", "1")
	ctx := context.Background()
	parts := e.topo.Partitions

	want := map[string]orders.Outcome{}
	for _, o := range []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed} {
		for _, id := range orderIDs("crc-"+string(o), 6) {
			want[id] = o
		}
	}
	trigger, _ := e.topo.TopicOf(e.topo.Trigger)
	cl := newClient(t, e.brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	misplaced := 0
	for id, o := range want {
		rec, err := orders.Record(ctx, e.serde, trigger, orders.NewOrder(id, o, time.Now()), "librdkafka-like")
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = int32(crc32.ChecksumIEEE([]byte(id)) % uint32(parts)) // librdkafka's consistent_random
		if rec.Partition != murmur2Partition(id, parts) {
			misplaced++
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if misplaced == 0 {
		t.Fatal("no order in another partition than murmur2's: the test shows nothing")
	}
	got := e.waitEnded(coord.http, want, 90*time.Second)
	chains := e.chains(ctx, 30*time.Second, func(c map[string][]string) bool {
		for id, o := range want {
			if count(c[id], "PaymentRefunded")+count(c[id], "InventoryReleased") < len(wantOf[o].commands) {
				return false
			}
		}
		return true
	})
	checkEnds(t, want, got, chains)

	// Every refund undoes a charge: its paymentId is the one the payment
	// step authorized, never the empty one of a null compensation.
	payments, _ := e.topo.TopicOf(e.topo.FullName("PaymentRefunded"))
	for _, r := range e.readTopic(ctx, payments) {
		typ, _ := event.Header(r, event.HeaderType)
		if typ != e.topo.FullName("PaymentRefunded") {
			continue
		}
		_, v, err := e.serde.Decode(ctx, r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if pr := v.(orders.PaymentRefunded); pr.PaymentID == "" {
			t.Errorf("order %s: refund without a payment id (a null compensation: the charge stays)", pr.OrderID)
		}
	}
	// One SagaEnded per order, and one history each (no phantom instance).
	ends := map[string]int{}
	for _, r := range e.readTopic(ctx, e.topo.EndedTopic()) {
		ends[string(r.Key)]++
	}
	for id := range want {
		if ends[id] != 1 {
			t.Errorf("order %s: %d SagaEnded, want 1", id, ends[id])
		}
		if inst := got[id]; !slices.ContainsFunc(inst.History, func(h saga.Entry) bool { return h.Type == e.topo.FullName("OrderPlaced") || h.Type == "OrderPlaced" }) {
			t.Errorf("order %s: history without its OrderPlaced: %+v", id, inst.History)
		}
	}
	if moved := metric(t, coord.http, "troupe_step_events_total", "outcome", "moved"); moved != float64(misplaced) {
		t.Errorf("coordinator moved %v records, want the %d misplaced orders", moved, misplaced)
	}
}

// murmur2Partition is the partition Java's default partitioner gives key.
func murmur2Partition(key string, n int32) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, int(n)))
}
