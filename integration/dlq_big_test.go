package integration

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
)

// A 1,000,000-byte record on the trigger topic (under the broker's limit,
// not Avro, so no step can handle it) becomes a dead letter that fits, its
// value cut, and the orders after it complete. Issue 13: its 1,000,301-byte
// dead letter was refused by the producer, every transaction of the step
// aborted for ever, and 0 of 16 later orders reached the coordinator.
func TestHugeRecordDoesNotStall(t *testing.T) {
	e := newSagaEnv(t, "")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	payment := e.procs[0]
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	ctx := context.Background()

	trigger, _ := e.topo.TopicOf(e.topo.Trigger)
	value := bytes.Repeat([]byte("poison!!"), 1_000_000/8)
	value[0] = 0x7f // not the Confluent magic byte: undecodable, a dead letter at once
	big := newClient(t, e.brokers, kgo.ProducerBatchMaxBytes(1_048_576), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	huge := &kgo.Record{Topic: trigger, Key: []byte("huge-1"), Value: value}
	if err := big.ProduceSync(ctx, huge).FirstErr(); err != nil {
		t.Fatalf("produce the 1,000,000-byte record: %v", err)
	}
	want := map[string]orders.Outcome{}
	for _, id := range orderIDs("after-huge", 16) {
		want[id] = orders.OutcomeCompleted
	}
	e.placeOrders(ctx, want)

	got := e.waitEnded(coord.http, want, 2*time.Minute)
	for id, inst := range got {
		if inst.Status != saga.Completed {
			t.Errorf("order %s after the huge record: %s %q", id, inst.Status, inst.Reason)
		}
	}

	// The payment step's dead letter: key and provenance kept, value cut.
	var d dlq.DeadLetter
	eventually(t, 30*time.Second, "the huge record's dead letter in the payment DLQ", func() (bool, string) {
		recs := e.readTopic(ctx, e.topo.DLQ("payment"))
		i := slices.IndexFunc(recs, func(r *kgo.Record) bool { return string(r.Key) == "huge-1" })
		if i < 0 {
			return false, fmt.Sprintf("%d dead letters, none keyed huge-1", len(recs))
		}
		d, _ = dlq.Parse(recs[i])
		return true, ""
	})
	if d.Source != (dlq.Coordinates{Topic: trigger, Partition: huge.Partition, Offset: huge.Offset}) {
		t.Errorf("dead letter's source %v, want %s/%d@%d", d.Source, trigger, huge.Partition, huge.Offset)
	}
	cuts := d.Cuts()
	if len(cuts) != 1 || cuts[0].Part != dlq.CutValue || cuts[0].Bytes != len(value) || d.Record.Value != nil {
		t.Fatalf("dead letter cuts %+v, value %d bytes; want the 1,000,000-byte value cut", cuts, len(d.Record.Value))
	}
	if aborts := metric(t, payment.http, "troupe_step_transaction_aborts_total"); aborts > 3 {
		t.Errorf("payment aborted %v transactions: the dead letter should have fitted at once", aborts)
	}
	out, err := runTroupe(t, ctx, "dlq", "show", "--topology", e.file, "--step", "payment", "--brokers", e.brokerList(),
		"--partition", strconv.Itoa(int(d.Record.Partition)), "--offset", strconv.FormatInt(d.Record.Offset, 10))
	if err != nil || !strings.Contains(out, "value: cut") || !strings.Contains(out, "value (1000000 bytes, sha256 ") {
		t.Errorf("troupe dlq show of the cut dead letter: %v\n%s", err, out)
	}
	t.Logf("huge record dead-lettered as %d bytes (%v); %d orders after it completed", recordSize(d.Record), cuts[0], len(got))
}

func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
