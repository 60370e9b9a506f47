package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
)

const (
	dlqTopic   = "orders.payment.dlq"
	retryTopic = "orders.payment.retry"
)

type fixture struct {
	cfg  kafka.Config
	adm  *kadm.Client
	prod *kgo.Client
	q    *dlq.Queue
}

// newFixture starts kfake with a 2-partition DLQ and retry topic holding
// dead letters for order-0..order-4 (order-i on partition i%2, failed at
// failedAt + i minutes), plus an aborted transaction in partition 0.
func newFixture(t *testing.T, ctx context.Context) *fixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f := &fixture{cfg: kafka.Config{Brokers: c.ListenAddrs()}}
	f.prod, err = kafka.NewClient(ctx, f.cfg, kgo.RecordPartitioner(replay.KeepPartition()), kgo.TransactionalID("step-payment"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.prod.Close)
	f.adm = kadm.NewClient(f.prod)
	for _, tp := range []string{dlqTopic, retryTopic} {
		if _, err := f.adm.CreateTopic(ctx, 2, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	// As the step runtime would: each dead letter in its own transaction.
	for i := range 5 {
		meta := event.New("troupe.example.orders.OrderPlaced", "client", fmt.Sprintf("order-%d", i))
		meta.ID = fmt.Sprintf("ev-%d", i)
		in := &kgo.Record{Topic: "orders", Partition: int32(i % 2), Offset: int64(100 + i), Key: []byte(meta.SagaID), Value: []byte{0, 0, 0, 0, 1, byte(i)}, Headers: meta.Headers()}
		dl := dlq.NewDeadLetter(in, "payment", fmt.Errorf("declined %d", i), 3, failedAt.Add(time.Duration(i)*time.Minute))
		dl.Topic = dlqTopic
		f.txn(t, ctx, kgo.TryCommit, dl)
		if i == 2 {
			f.txn(t, ctx, kgo.TryAbort, &kgo.Record{Topic: dlqTopic, Partition: 0, Key: []byte("aborted"), Value: []byte("x")})
		}
	}
	f.q, err = dlq.Open(ctx, f.cfg, "payment", dlqTopic, retryTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.q.Close)
	return f
}

func (f *fixture) txn(t *testing.T, ctx context.Context, end kgo.TransactionEndTry, recs ...*kgo.Record) {
	t.Helper()
	if err := f.prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := f.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := f.prod.EndTransaction(ctx, end); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) list(t *testing.T, ctx context.Context, sel dlq.Selection) []dlq.DeadLetter {
	t.Helper()
	var out []dlq.DeadLetter
	if err := f.q.Scan(ctx, sel, func(d dlq.DeadLetter) error { out = append(out, d); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func keys(ds []dlq.DeadLetter) string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, string(d.Record.Key))
	}
	return strings.Join(ks, " ")
}

func TestQueueScan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)

	all := f.list(t, ctx, dlq.All())
	if len(all) != 5 {
		t.Fatalf("listed %d dead letters (%s), want 5", len(all), keys(all))
	}
	for _, d := range all {
		var i int
		fmt.Sscanf(string(d.Record.Key), "order-%d", &i)
		if d.Malformed != nil || d.Record.Partition != int32(i%2) || d.Source.Offset != int64(100+i) || d.Error != fmt.Sprintf("declined %d", i) ||
			d.Attempts != 3 || d.Event.ID != fmt.Sprintf("ev-%d", i) || !d.FailedAt.Equal(failedAt.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("dead letter %s: %+v", d.Record.Key, d)
		}
	}

	if got := keys(f.list(t, ctx, dlq.Since(failedAt.Add(2*time.Minute)))); !sameSet(got, "order-2 order-3 order-4") {
		t.Errorf("since +2m: %s", got)
	}
	// Partition 0 holds order-0, order-2, order-4 at offsets 0, 2, 6
	// (transaction markers in between, and an aborted record at 4).
	d, err := f.q.Get(ctx, 0, 6)
	if err != nil || string(d.Record.Key) != "order-4" {
		t.Errorf("Get(0, 6) = %s, %v", d.Record.Key, err)
	}
	d, err = f.q.Get(ctx, -1, 6)
	if err != nil || string(d.Record.Key) != "order-4" {
		t.Errorf("Get(-1, 6) = %s, %v (only partition 0 has offset 6)", d.Record.Key, err)
	}

	var oe *dlq.OffsetError
	for _, tc := range []struct {
		p    int32
		off  int64
		want string
	}{
		{-1, 0, "offset 0 is in partitions 0, 1 of orders.payment.dlq: say which partition"},
		{-1, 99, "offset 99 is not in orders.payment.dlq (it holds partition 0: offsets 0-7, partition 1: offsets 0-3)"},
		{1, 5, "offset 5 is not in orders.payment.dlq partition 1, which holds offsets 0-3"},
		{7, 0, "orders.payment.dlq has no partition 7 (it has partitions 0-1)"},
		{0, 1, "offset 1 of orders.payment.dlq partition 0 is a transaction marker or an aborted write, not a dead letter"},
		{0, 4, "offset 4 of orders.payment.dlq partition 0 is a transaction marker or an aborted write, not a dead letter"},
	} {
		_, err := f.q.Get(ctx, tc.p, tc.off)
		if !errors.As(err, &oe) || err.Error() != tc.want {
			t.Errorf("Get(%d, %d): %v\n want: %s", tc.p, tc.off, err, tc.want)
		}
	}
}

func sameSet(a, b string) bool {
	m := map[string]int{}
	for _, s := range strings.Fields(a) {
		m[s]++
	}
	for _, s := range strings.Fields(b) {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestQueueReplayAndDiscard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)

	// A dry run writes nothing.
	var dry []string
	n, err := f.q.Replay(ctx, dlq.All(), dlq.SendOptions{DryRun: true, OnSent: func(d dlq.DeadLetter, r *kgo.Record) {
		dry = append(dry, fmt.Sprintf("%s->%d", d.Record.Key, r.Partition))
	}})
	if err != nil || n != 5 || len(dry) != 5 {
		t.Fatalf("dry run: %d, %v, %v", n, err, dry)
	}
	if out, _ := f.q.Outcomes(ctx); len(out) != 0 {
		t.Fatalf("dry run wrote %v", out)
	}

	// Replay one dead letter, then all of them: the first is settled, so
	// --all skips it.
	var sent []*kgo.Record
	onSent := func(_ dlq.DeadLetter, r *kgo.Record) { sent = append(sent, r) }
	var skipped []string
	onSkipped := func(d dlq.DeadLetter, o dlq.Outcome) {
		skipped = append(skipped, fmt.Sprintf("%d@%d %s", d.Record.Partition, d.Record.Offset, o))
	}
	if n, err := f.q.Replay(ctx, dlq.At(0, 2), dlq.SendOptions{OnSent: onSent}); err != nil || n != 1 {
		t.Fatalf("replay one: %d, %v", n, err)
	}
	start := time.Now()
	if n, err := f.q.Replay(ctx, dlq.All(), dlq.SendOptions{OnSent: onSent, OnSkipped: onSkipped, Rate: 20}); err != nil || n != 4 {
		t.Fatalf("replay all: %d, %v (want 4: one of 5 was replayed before)", n, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Errorf("4 records at 20/s took %s", el)
	}
	if fmt.Sprint(skipped) != "[0@2 replayed]" {
		t.Errorf("replay all skipped %v, want [0@2 replayed]", skipped)
	}
	// A settled dead letter selected by offset is refused, and nothing is
	// written; Force writes anyway.
	var se *dlq.SettledError
	if n, err := f.q.Discard(ctx, dlq.At(1, 0), dlq.SendOptions{OnSent: onSent}); !errors.As(err, &se) || n != 0 || se.Outcome.Replays != 1 || !strings.Contains(err.Error(), "settled already: replayed") {
		t.Fatalf("discard of a replayed dead letter: %d, %v; want a SettledError", n, err)
	}
	if n, err := f.q.Discard(ctx, dlq.At(1, 0), dlq.SendOptions{OnSent: onSent, Force: true}); err != nil || n != 1 {
		t.Fatalf("forced discard: %d, %v", n, err)
	}
	if n, err := f.q.Discard(ctx, dlq.At(1, 0), dlq.SendOptions{OnSent: onSent}); !errors.Is(err, dlq.ErrSettled) || n != 0 {
		t.Fatalf("second discard: %d, %v; want ErrSettled", n, err)
	}
	skipped = nil
	if n, err := f.q.Replay(ctx, dlq.All(), dlq.SendOptions{OnSent: onSent, OnSkipped: onSkipped, DryRun: true}); err != nil || n != 0 || len(skipped) != 5 {
		t.Fatalf("dry run of replay all once all are settled: %d, %v, skipped %v", n, err, skipped)
	}
	if len(sent) != 6 || sent[0].Offset < 0 {
		t.Fatalf("OnSent saw %d records, want 6, first %+v", len(sent), sent[0])
	}

	// The retry topic holds them on the failed record's partition number.
	spans, err := replay.Spans(ctx, f.adm, retryTopic, replay.FromOffset(0))
	if err != nil {
		t.Fatal(err)
	}
	var got []*kgo.Record
	if err := replay.Scan(ctx, f.cfg, retryTopic, spans, func(r *kgo.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("retry topic holds %d records, want 6", len(got))
	}
	counts := map[string][]int{}
	discards := 0
	for _, r := range got {
		var i int
		fmt.Sscanf(string(r.Key), "order-%d", &i)
		if r.Partition != int32(i%2) {
			t.Errorf("%s on retry partition %d, want %d", r.Key, r.Partition, i%2)
		}
		if d, ok := dlq.ParseDiscard(r); ok {
			discards++
			if string(d.Key) != "order-1" || d.EventID != "ev-1" || d.From.String() != dlqTopic+"/1@0" {
				t.Errorf("discard %+v", d)
			}
			continue
		}
		if v, _ := event.Header(r, event.HeaderID); v != fmt.Sprintf("ev-%d", i) || string(r.Value) != string([]byte{0, 0, 0, 0, 1, byte(i)}) {
			t.Errorf("replay of %s: ce_id %q value %v", r.Key, v, r.Value)
		}
		counts[string(r.Key)] = append(counts[string(r.Key)], dlq.ReplayCount(r))
	}
	// Each replay is built from the dead letter, whose count is 0: the
	// replays say 1. The count rises when a replay fails again.
	if discards != 1 || fmt.Sprint(counts["order-2"]) != "[1]" || fmt.Sprint(counts["order-0"]) != "[1]" {
		t.Errorf("discards %d, replay counts %v", discards, counts)
	}

	out, err := f.q.Outcomes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"0@0": "replayed", "0@2": "replayed", "0@6": "replayed", "1@0": "replayed, discarded", "1@2": "replayed"}
	for at, w := range want {
		var p int32
		var o int64
		fmt.Sscanf(at, "%d@%d", &p, &o)
		if got := out[dlq.Coordinates{Topic: dlqTopic, Partition: p, Offset: o}].String(); got != w {
			t.Errorf("outcome of %s: %q, want %q", at, got, w)
		}
	}
}

func TestQueueEmptyAndMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := kafka.Config{Brokers: c.ListenAddrs()}
	if _, err := dlq.Open(ctx, cfg, "payment", dlqTopic, retryTopic); !errors.Is(err, replay.ErrUnknownTopic) {
		t.Fatalf("Open of a missing DLQ: %v", err)
	}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, dlqTopic); err != nil {
		t.Fatal(err)
	}
	q, err := dlq.Open(ctx, cfg, "payment", dlqTopic, retryTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	n := 0
	if err := q.Scan(ctx, dlq.All(), func(dlq.DeadLetter) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("scan of an empty DLQ: %d, %v", n, err)
	}
	if _, err := q.Get(ctx, -1, 0); !errors.Is(err, dlq.ErrEmpty) || err.Error() != "no offset 0: orders.payment.dlq is empty" {
		t.Errorf("Get on an empty DLQ: %v", err)
	}
	if _, err := q.Replay(ctx, dlq.All(), dlq.SendOptions{}); !errors.Is(err, replay.ErrUnknownTopic) || !strings.Contains(err.Error(), retryTopic) {
		t.Errorf("replay without a retry topic: %v", err)
	}
}
