package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/state"
	"github.com/troupehq/troupe/pkg/step/steptest"
)

// restoreBench writes a changelog of b.restore instances (a small JSON state
// each, as the example's steps keep) over the partitions, then restores
// every partition into a fresh Pebble store, one after the other, as a step
// that takes over all of them does before it is ready.
func (b *bench) restoreBench(ctx context.Context) error {
	app := fmt.Sprintf("bench%d", time.Now().UnixNano())
	topic := state.ChangelogTopic(app, "restore")
	if err := b.createTopics(ctx, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return err
	}
	defer cl.Close()
	in := state.Instance{State: []byte(`{"paymentId":"pay-order-0000000","amountCents":12999,"refunded":false}`), Seen: []uint64{1, 2, 3, 4}}
	v := in.Append(nil)
	var firstErr error
	for i := range b.restore {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: state.InstanceKey(fmt.Sprintf("order-%07d", i)), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil || firstErr != nil {
		return fmt.Errorf("fill %s: %v %v", topic, err, firstErr)
	}
	dir, err := tempDir("restore")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := state.Open(dir, state.Options{App: app, Step: "restore"})
	if err != nil {
		return err
	}
	defer s.Close()
	r := state.Restorer{Kafka: kafka.Config{Brokers: b.brokers, Logger: b.log}, Store: s, Topic: topic, Logger: b.log}
	start := time.Now()
	total := int64(0)
	for p := range b.partitions {
		res, err := r.Restore(ctx, p)
		if err != nil {
			return err
		}
		total += int64(res.Records)
	}
	took := time.Since(start)
	if total != int64(b.restore) {
		return fmt.Errorf("restored %d records, want %d", total, b.restore)
	}
	b.record("restore", "throughput", float64(total)/took.Seconds(), "records/s", map[string]any{"instances": b.restore})
	b.record("restore", "ready_after", took.Seconds(), "s", map[string]any{"instances": b.restore})
	b.rows = append(b.rows, &row{
		name: "restore", figure: fmt.Sprintf("%.0f records/s", float64(total)/took.Seconds()),
		vs:   fmt.Sprintf("ready in %.1f s", took.Seconds()),
		note: fmt.Sprintf("%d instances over %d partitions into one Pebble store", b.restore, b.partitions),
	})
	return nil
}

// avroBench measures encoding and decoding the example's OrderPlaced with
// the Confluent framing.
func (b *bench) avroBench(ctx context.Context) error {
	serde := avro.NewSerde(steptest.NewRegistry())
	if err := orders.Register(serde); err != nil {
		return err
	}
	ord := orders.NewOrder("order-0000001", orders.OutcomeCompleted, time.Now())
	enc := testingBenchmark(func() error { _, err := serde.Encode(ctx, "orders", ord); return err })
	v, err := serde.Encode(ctx, "orders", ord)
	if err != nil {
		return err
	}
	dec := testingBenchmark(func() error { _, _, err := serde.Decode(ctx, v); return err })
	if enc.err != nil || dec.err != nil {
		return fmt.Errorf("encode: %v; decode: %v", enc.err, dec.err)
	}
	b.record("avro", "encode", float64(enc.ns), "ns/op", map[string]any{"allocs": enc.allocs, "event": "OrderPlaced"})
	b.record("avro", "decode", float64(dec.ns), "ns/op", map[string]any{"allocs": dec.allocs, "event": "OrderPlaced"})
	b.rows = append(b.rows, &row{
		name:   "avro",
		figure: fmt.Sprintf("encode %d ns, %d allocs · decode %d ns, %d allocs", enc.ns, enc.allocs, dec.ns, dec.allocs),
		note:   fmt.Sprintf("OrderPlaced, %d bytes with the Confluent header", len(v)),
	})
	return nil
}
