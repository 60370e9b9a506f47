package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
)

// Recovery tools against the real broker (README: CLI, issue 7): a copy by
// time range takes exactly the records in range, a group rewind is refused
// while the group lives and makes it reprocess once stopped, and a DLQ
// written in transactions is listed and replayed read_committed.

func replayConfig() kafka.Config { return kafka.Config{Brokers: kafkaharness.Brokers()} }

// replayProduceTimed writes n records to topic with timestamps base + i
// seconds, key k<i%7>, on partition i%parts (per partition in increasing
// time), and returns them.
func replayProduceTimed(t *testing.T, ctx context.Context, topic string, n int, parts int32, base time.Time) []*kgo.Record {
	t.Helper()
	prod := newClient(t, kafkaharness.Brokers(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{
			Topic:     topic,
			Partition: int32(i) % parts,
			Key:       fmt.Appendf(nil, "k%d", i%7),
			Value:     []byte(strconv.Itoa(i)),
			Headers:   []kgo.RecordHeader{{Key: "ce_id", Value: fmt.Appendf(nil, "ev-%d", i)}},
			Timestamp: base.Add(time.Duration(i) * time.Second),
		})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records to %s: %v", n, topic, err)
	}
	return recs
}

func TestReplayCopyTimeRange(t *testing.T) {
	const n, parts = 300, 3
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	src, dst := topicName(t, "src"), topicName(t, "dst")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, src, parts, 1, nil)
	createTopic(t, ctx, adm, dst, parts, 1, nil)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	produced := replayProduceTimed(t, ctx, src, n, parts, base)

	from, to := base.Add(100*time.Second), base.Add(200*time.Second)
	start := time.Now()
	res, err := replay.Copy(ctx, replayConfig(), replay.Range{Topic: src, From: replay.FromTime(from), To: to}, dst, replay.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copied %d records (read %d, skipped %d) in %s", res.Copied, res.Read, res.Skipped, time.Since(start).Round(time.Millisecond))

	want := map[string]*kgo.Record{}
	for i, r := range produced {
		if i >= 100 && i < 200 {
			want[string(r.Value)] = r
		}
	}
	got := readAll(t, ctx, adm, dst)
	if res.Copied != int64(len(want)) || len(got) != len(want) {
		t.Fatalf("copied %d, %s holds %d records; want the %d timestamped in [%s, %s)", res.Copied, dst, len(got), len(want), from, to)
	}
	lastOf := map[int32]int{}
	for _, r := range got {
		w, ok := want[string(r.Value)]
		if !ok {
			t.Errorf("copied record %s (timestamp %s) is out of range or copied twice", r.Value, r.Timestamp)
			continue
		}
		delete(want, string(r.Value))
		if r.Partition != w.Partition || string(r.Key) != string(w.Key) || !r.Timestamp.Equal(w.Timestamp) ||
			len(r.Headers) != 1 || string(r.Headers[0].Value) != string(w.Headers[0].Value) {
			t.Errorf("copy of %s: partition %d key %s ts %s headers %v; source: %d %s %s %v",
				r.Value, r.Partition, r.Key, r.Timestamp, r.Headers, w.Partition, w.Key, w.Timestamp, w.Headers)
		}
		i, _ := strconv.Atoi(string(r.Value))
		if last, ok := lastOf[r.Partition]; ok && i < last {
			t.Errorf("partition %d: %d copied after %d", r.Partition, i, last)
		}
		lastOf[r.Partition] = i
	}
}

func TestReplayGroupRewind(t *testing.T) {
	const n, parts = 60, 2
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topic, group := topicName(t, "events"), topicName(t, "group")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, topic, parts, 1, nil)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	replayProduceTimed(t, ctx, topic, n, parts, base)

	// A step replica consumes everything and commits.
	member := func(id string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaharness.Brokers()...), kgo.ClientID(id),
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.DisableAutoCommit())
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	m1 := member("payment-replica-1")
	recs := consumeN(t, ctx, m1, n)
	if err := m1.CommitRecords(ctx, recs...); err != nil {
		t.Fatal(err)
	}

	_, err := replay.RewindGroup(ctx, replayConfig(), group, topic, replay.FromOffset(0), replay.RewindOptions{})
	var live *replay.LiveMembersError
	if !errors.As(err, &live) {
		t.Fatalf("rewind of a live group: %v, want *LiveMembersError", err)
	}
	t.Logf("refused: %v", err)
	if len(live.Members) != 1 || live.Members[0].ClientID != "payment-replica-1" || live.Members[0].Host == "" {
		t.Errorf("live members: %+v", live.Members)
	}
	m1.Close() // leaves the group

	// Rewind to 40 s after base: partition p holds i%2 == p at i s.
	rw, err := replay.RewindGroup(ctx, replayConfig(), group, topic, replay.FromTime(base.Add(40*time.Second)), replay.RewindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rewound: %+v", rw.Partitions)
	if fmt.Sprint(rw.Partitions) != "[{0 30 20} {1 30 20}]" {
		t.Errorf("rewind: %v, want both partitions from 30 to 20", rw.Partitions)
	}

	// The group's next member reprocesses exactly records 40..59.
	m2 := member("payment-replica-2")
	defer m2.Close()
	again := consumeN(t, ctx, m2, n-40)
	seen := map[string]bool{}
	for _, r := range again {
		i, _ := strconv.Atoi(string(r.Value))
		if i < 40 || seen[string(r.Value)] {
			t.Errorf("reprocessed record %d (duplicate %v), want 40..59 once", i, seen[string(r.Value)])
		}
		seen[string(r.Value)] = true
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if extra := m2.PollFetches(pctx).Records(); len(extra) > 0 {
		t.Errorf("%d more records after the rewound range", len(extra))
	}
}

// TestReplayDeadLetters writes dead letters in transactions (as an
// exactly-once step does, with an aborted one between), then lists,
// replays and discards them through pkg/dlq.
func TestReplayDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dlqT, retryT := topicName(t, "dlq"), topicName(t, "retry")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, dlqT, 2, 1, nil)
	createTopic(t, ctx, adm, retryT, 2, 1, nil)
	txn := newClient(t, kafkaharness.Brokers(), kgo.TransactionalID(topicName(t, "txn")), kgo.RecordPartitioner(replay.KeepPartition()))
	failed := time.Now().Add(-time.Minute).UTC()
	for i := range 4 {
		meta := event.New("troupe.example.orders.OrderPlaced", "it", fmt.Sprintf("order-%d", i))
		in := &kgo.Record{Topic: "orders", Partition: int32(i % 2), Offset: int64(i), Key: []byte(meta.SagaID), Value: []byte{0, 0, 0, 0, 1, byte(i)}, Headers: meta.Headers()}
		dl := dlq.NewDeadLetter(in, "payment", errors.New("declined"), 3, failed)
		dl.Topic = dlqT
		for _, end := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} { // each committed one follows an aborted copy
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := txn.ProduceSync(ctx, dl).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if err := txn.EndTransaction(ctx, end); err != nil {
				t.Fatal(err)
			}
			dl = dlq.NewDeadLetter(in, "payment", errors.New("declined"), 3, failed)
			dl.Topic = dlqT
		}
	}

	q, err := dlq.Open(ctx, replayConfig(), "payment", dlqT, retryT)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var listed []string
	if err := q.Scan(ctx, dlq.All(), func(d dlq.DeadLetter) error {
		if d.Malformed != nil || d.Step != "payment" || d.Attempts != 3 {
			t.Errorf("dead letter %s: %+v", d.At(), d)
		}
		listed = append(listed, fmt.Sprintf("%s@%d/%d", d.Record.Key, d.Record.Partition, d.Record.Offset))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Per partition: aborted record, abort marker, committed record, commit
	// marker; twice. So the dead letters are at offsets 2 and 6.
	if !sameStrings(listed, []string{"order-0@0/2", "order-2@0/6", "order-1@1/2", "order-3@1/6"}) {
		t.Fatalf("listed %v", listed)
	}
	if _, err := q.Get(ctx, 0, 0); err == nil || !strings.Contains(err.Error(), "aborted write") {
		t.Errorf("Get of an aborted record: %v", err)
	}

	n, err := q.Replay(ctx, dlq.All(), dlq.SendOptions{})
	if err != nil || n != 4 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	// 1/6 is settled by the replay: only Force writes a second settle.
	if _, err := q.Discard(ctx, dlq.At(1, 6), dlq.SendOptions{}); !errors.Is(err, dlq.ErrSettled) {
		t.Fatalf("discard of a replayed dead letter: %v, want ErrSettled", err)
	}
	if n, err := q.Discard(ctx, dlq.At(1, 6), dlq.SendOptions{Force: true}); err != nil || n != 1 {
		t.Fatalf("discard: %d, %v", n, err)
	}
	retry := readAll(t, ctx, adm, retryT)
	if len(retry) != 5 {
		t.Fatalf("retry topic holds %d records, want 5", len(retry))
	}
	for _, r := range retry {
		var i int
		fmt.Sscanf(string(r.Key), "order-%d", &i)
		if r.Partition != int32(i%2) {
			t.Errorf("%s in retry partition %d, want %d", r.Key, r.Partition, i%2)
		}
		if _, ok := dlq.ParseDiscard(r); !ok && dlq.ReplayCount(r) != 1 {
			t.Errorf("replay of %s has count %d", r.Key, dlq.ReplayCount(r))
		}
	}
	out, err := q.Outcomes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o := out[dlq.Coordinates{Topic: dlqT, Partition: 1, Offset: 6}]; o.Replays != 1 || !o.Discarded {
		t.Errorf("outcome of 1/6: %+v", o)
	}
}

func sameStrings(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return len(a) == len(b)
}
