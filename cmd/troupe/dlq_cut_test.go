package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/replay"
)

// A dead letter whose value was cut to fit the DLQ: show says so, replay
// reads the value back from the source, and fails, naming the source, once
// the source no longer holds it.
func TestDLQCutValue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker, _ := dlqTestCluster(t, ctx)
	big, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.RecordPartitioner(replay.KeepPartition()),
		kgo.ProducerBatchMaxBytes(1_048_588), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	value := bytes.Repeat([]byte{0, 0, 0, 0, 1, 'x'}, 1_000_000/6)
	for i, id := range []string{"order-gone", "order-kept"} {
		meta := event.New("troupe.example.orders.OrderPlaced", "client", id)
		in := &kgo.Record{Topic: "orders", Partition: 4, Key: []byte(id), Value: value, Headers: meta.Headers()}
		if err := big.ProduceSync(ctx, in).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if in.Offset != int64(i) {
			t.Fatalf("source record at offset %d, want %d", in.Offset, i)
		}
		dl := dlq.NewDeadLetter(in, "payment", errors.New("too big"), 1, time.Now())
		dl.Topic = "orders.payment.dlq"
		if err := big.ProduceSync(ctx, dl).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"--brokers", broker, "--topology", testTopology, "--step", "payment"}
	run := func(args ...string) (string, int) {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, common...)...)
		return out + errs, code
	}

	out, code := run("dlq", "show", "--offset", "0", "--partition", "4")
	for _, want := range []string{"cut to fit the DLQ", "orders partition 4 offset 0", "value (999996 bytes, sha256 ", "value: cut"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("dlq show: exit %d, output does not say %q:\n%s", code, want, out)
		}
	}

	if _, err := kadm.NewClient(big).DeleteRecords(ctx, kadm.Offsets{"orders": {4: {At: 1}}}); err != nil {
		t.Fatal(err)
	}
	out, code = run("dlq", "replay", "--offset", "0", "--partition", "4")
	if code == exitOK || !strings.Contains(out, "the original at orders partition 4 offset 0 is gone") {
		t.Errorf("replay of a cut dead letter whose source is gone: exit %d\n%s", code, out)
	}
	out, code = run("dlq", "replay", "--offset", "1", "--partition", "4")
	if code != exitOK {
		t.Fatalf("replay of a cut dead letter whose source is retained: exit %d\n%s", code, out)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("orders.payment.retry"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollFetches(ctx)
	if err := fs.Err(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Key) != "order-kept" || !bytes.Equal(recs[0].Value, value) {
		t.Fatalf("retry topic holds %d records, want order-kept with its %d-byte value", len(recs), len(value))
	}
}
