package replay_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "2026-04-30T10:00:00Z", want: time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC)},
		{in: "2026-04-30T12:00:00.5+02:00", want: time.Date(2026, 4, 30, 10, 0, 0, 5e8, time.UTC)},
		{in: "2026-04-30", want: time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC)},
		{in: "now", want: now},
		{in: "-1h", want: now.Add(-time.Hour)},
		{in: "-90s", want: now.Add(-90 * time.Second)},
		{in: "-1h30m", want: now.Add(-90 * time.Minute)},
		{in: "-2d", want: now.Add(-48 * time.Hour)},
		{in: "-1d12h", want: now.Add(-36 * time.Hour)},
		{in: "", err: "empty time"},
		{in: "yesterday", err: "neither RFC 3339"},
		{in: "-1x", err: "relative time"},
		{in: "--1h", err: "relative time"},
		{in: "1h", err: "neither RFC 3339"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := replay.ParseTime(tc.in, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseTime(%q) = %v, %v; want error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("ParseTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func ExampleParseTime() {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"-1h", "-2d", "2026-04-30T08:00:00+02:00"} {
		t, _ := replay.ParseTime(s, now)
		fmt.Println(t.UTC().Format(time.RFC3339))
	}
	// Output:
	// 2026-05-01T11:00:00Z
	// 2026-04-29T12:00:00Z
	// 2026-04-30T06:00:00Z
}

// fake starts a kfake cluster and returns a config for it and an admin client.
func fake(t *testing.T) (kafka.Config, *kadm.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := kafka.Config{Brokers: c.ListenAddrs()}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cfg, kadm.NewClient(cl)
}

func create(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	if _, err := adm.CreateTopic(context.Background(), partitions, 1, nil, topic); err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

func producer(t *testing.T, cfg kafka.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kafka.NewClient(context.Background(), cfg, append([]kgo.Opt{kgo.RecordPartitioner(replay.KeepPartition())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readAll reads every committed record of topic.
func readAll(t *testing.T, ctx context.Context, cfg kafka.Config, adm *kadm.Client, topic string) []*kgo.Record {
	t.Helper()
	spans, err := replay.Spans(ctx, adm, topic, replay.FromOffset(0))
	if err != nil {
		t.Fatal(err)
	}
	var out []*kgo.Record
	if err := replay.Scan(ctx, cfg, topic, spans, func(r *kgo.Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Truncate(time.Millisecond)

// produceTimed writes n records with timestamps t0 + ts(i) seconds, key
// k<i%5>, value v<i>, on partition i%parts.
func produceTimed(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, n int, parts int32, ts func(i int) int) {
	t.Helper()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{
			Topic:     topic,
			Partition: int32(i) % parts,
			Key:       fmt.Appendf(nil, "k%d", i%5),
			Value:     fmt.Appendf(nil, "v%02d", i),
			Headers:   []kgo.RecordHeader{{Key: "ce_id", Value: fmt.Appendf(nil, "id-%d", i)}, {Key: "n", Value: []byte(strconv.Itoa(i))}},
			Timestamp: t0.Add(time.Duration(ts(i)) * time.Second),
		})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func values(recs []*kgo.Record) map[string]*kgo.Record {
	m := map[string]*kgo.Record{}
	for _, r := range recs {
		m[string(r.Value)] = r
	}
	return m
}

func TestCopyTimeRangeSamePartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "src", 3)
	create(t, adm, "dst", 3)
	produceTimed(t, ctx, producer(t, cfg), "src", 30, 3, func(i int) int { return i })

	var ticks int
	res, err := replay.Copy(ctx, cfg, replay.Range{Topic: "src", From: replay.FromTime(t0.Add(10 * time.Second)), To: t0.Add(20 * time.Second)}, "dst",
		replay.CopyOptions{Progress: func(replay.Progress) { ticks++ }, ProgressEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 10 || !res.SamePartition {
		t.Fatalf("copied %d records (same partition %v), want 10 (true); result %+v", res.Copied, res.SamePartition, res)
	}
	src := values(readAll(t, ctx, cfg, adm, "src"))
	got := readAll(t, ctx, cfg, adm, "dst")
	if len(got) != 10 {
		t.Fatalf("dst has %d records, want 10", len(got))
	}
	for _, r := range got {
		i, _ := strconv.Atoi(strings.TrimPrefix(string(r.Value), "v"))
		if i < 10 || i >= 20 {
			t.Errorf("copied %s (timestamp %s), outside the range", r.Value, r.Timestamp)
		}
		o := src[string(r.Value)]
		if r.Partition != o.Partition || string(r.Key) != string(o.Key) || !r.Timestamp.Equal(o.Timestamp) || fmt.Sprint(r.Headers) != fmt.Sprint(o.Headers) {
			t.Errorf("copy of %s differs: partition %d key %s ts %s headers %v; source %d %s %s %v",
				r.Value, r.Partition, r.Key, r.Timestamp, r.Headers, o.Partition, o.Key, o.Timestamp, o.Headers)
		}
	}
}

// With another partition count, the key places records: one key's records
// land together, in their original order.
func TestCopyByKeyWhenPartitionsDiffer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "src", 1)
	create(t, adm, "dst", 4)
	produceTimed(t, ctx, producer(t, cfg), "src", 40, 1, func(i int) int { return i })

	res, err := replay.Copy(ctx, cfg, replay.Range{Topic: "src", From: replay.FromOffset(5)}, "dst", replay.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 35 || res.SamePartition {
		t.Fatalf("copied %d (same partition %v), want 35 by key", res.Copied, res.SamePartition)
	}
	partOf := map[string]int32{}
	last := map[string]int{}
	parts := map[int32]bool{}
	for _, r := range readAll(t, ctx, cfg, adm, "dst") {
		k := string(r.Key)
		if p, ok := partOf[k]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", k, p, r.Partition)
		}
		partOf[k] = r.Partition
		parts[r.Partition] = true
		i, _ := strconv.Atoi(strings.TrimPrefix(string(r.Value), "v"))
		if i < 5 {
			t.Errorf("copied %s, before offset 5", r.Value)
		}
		if l, ok := last[k]; ok && i < l {
			t.Errorf("key %s: %d after %d", k, i, l)
		}
		last[k] = i
	}
	if len(parts) < 2 {
		t.Errorf("5 keys landed in %d partition(s) of 4", len(parts))
	}
}

// Producers may set timestamps out of order: the range is by timestamp, not
// by the first offset at or after a time.
func TestCopyOutOfOrderTimestamps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "src", 1)
	create(t, adm, "dst", 1)
	ts := []int{10, 30, 15, 20, 5, 24, 25}
	produceTimed(t, ctx, producer(t, cfg), "src", len(ts), 1, func(i int) int { return ts[i] })

	res, err := replay.Copy(ctx, cfg, replay.Range{Topic: "src", From: replay.FromTime(t0.Add(12 * time.Second)), To: t0.Add(25 * time.Second)}, "dst", replay.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range readAll(t, ctx, cfg, adm, "dst") {
		got = append(got, string(r.Value))
	}
	if want := "[v02 v03 v05]"; fmt.Sprint(got) != want || res.Copied != 3 {
		t.Fatalf("copied %v (%d), want %s", got, res.Copied, want)
	}
}

// Aborted records are not copied, and a range whose last offsets are
// transaction markers still ends.
func TestCopySkipsAbortedAndEndsOnMarkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "src", 2)
	create(t, adm, "dst", 2)
	txn := producer(t, cfg, kgo.TransactionalID("copy-test"))
	for _, end := range []kgo.TransactionEndTry{kgo.TryCommit, kgo.TryAbort, kgo.TryCommit, kgo.TryAbort} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for p := range int32(2) {
			r := &kgo.Record{Topic: "src", Partition: p, Value: fmt.Appendf(nil, "%v-%d", end, p)}
			if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	res, err := replay.Copy(ctx, cfg, replay.Range{Topic: "src"}, "dst", replay.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 4 {
		t.Fatalf("copied %d records, want the 4 committed ones", res.Copied)
	}
	for _, r := range readAll(t, ctx, cfg, adm, "dst") {
		if !strings.HasPrefix(string(r.Value), fmt.Sprint(kgo.TryCommit)) {
			t.Errorf("copied %q", r.Value)
		}
	}
}

func TestCopyUnknownTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "src", 1)
	if _, err := replay.Copy(ctx, cfg, replay.Range{Topic: "src"}, "nope", replay.CopyOptions{}); !errors.Is(err, replay.ErrUnknownTopic) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("copy to a missing topic: %v", err)
	}
	if _, err := replay.Copy(ctx, cfg, replay.Range{Topic: "nope"}, "src", replay.CopyOptions{}); !errors.Is(err, replay.ErrUnknownTopic) {
		t.Errorf("copy from a missing topic: %v", err)
	}
}

func TestRewindGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, adm := fake(t)
	create(t, adm, "events", 2)
	produceTimed(t, ctx, producer(t, cfg), "events", 20, 2, func(i int) int { return i }) // 10 per partition, partition p gets i%2==p

	const group = "orders.payment"
	member, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("payment-replica-1"),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 20; {
		fs := member.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		n += fs.NumRecords()
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	_, err = replay.RewindGroup(ctx, cfg, group, "events", replay.FromOffset(0), replay.RewindOptions{})
	var live *replay.LiveMembersError
	if !errors.As(err, &live) {
		t.Fatalf("rewind of a live group: %v, want a *LiveMembersError", err)
	}
	if len(live.Members) != 1 || live.Members[0].ClientID != "payment-replica-1" || !strings.Contains(err.Error(), `client "payment-replica-1" on `) {
		t.Errorf("live members %+v; error %q", live.Members, err)
	}
	member.Close() // leaves the group

	dry, err := replay.RewindGroup(ctx, cfg, group, "events", replay.FromOffset(4), replay.RewindOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dry.Partitions) != "[{0 10 4} {1 10 4}]" {
		t.Errorf("dry run: %v", dry.Partitions)
	}
	assertCommitted(t, ctx, adm, group, "events", 10, 10)

	// Partition 0 has timestamps 0,2,..,18 s; partition 1 has 1,3,..,19 s.
	rw, err := replay.RewindGroup(ctx, cfg, group, "events", replay.FromTime(t0.Add(13*time.Second)), replay.RewindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rw.Partitions) != "[{0 10 7} {1 10 6}]" {
		t.Errorf("rewind by time: %v", rw.Partitions)
	}
	assertCommitted(t, ctx, adm, group, "events", 7, 6)

	// A group without offsets is refused unless allowed; offsets beyond
	// the end are clamped.
	if _, err := replay.RewindGroup(ctx, cfg, "fresh", "events", replay.FromOffset(0), replay.RewindOptions{}); !errors.Is(err, replay.ErrNoCommittedOffsets) {
		t.Errorf("rewind of an unknown group: %v", err)
	}
	rw, err = replay.RewindGroup(ctx, cfg, "fresh", "events", replay.FromOffset(99), replay.RewindOptions{AllowNew: true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rw.Partitions) != "[{0 -1 10} {1 -1 10}]" {
		t.Errorf("rewind of a new group past the end: %v", rw.Partitions)
	}
	assertCommitted(t, ctx, adm, "fresh", "events", 10, 10)

	// A rewound group's member starts at the rewound offsets.
	member2, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer member2.Close()
	var got []string
	for len(got) < 7 {
		fs := member2.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 7 {
		t.Errorf("reprocessed %v, want the 7 records from 13 s on", got)
	}
}

func assertCommitted(t *testing.T, ctx context.Context, adm *kadm.Client, group, topic string, want ...int64) {
	t.Helper()
	resp, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	for p, w := range want {
		o, ok := resp.Lookup(topic, int32(p))
		if !ok || o.At != w {
			t.Errorf("group %s %s/%d committed %v (%v), want %d", group, topic, p, o.At, ok, w)
		}
	}
}

func TestKeepPartition(t *testing.T) {
	p := replay.KeepPartition().ForTopic("t")
	for _, tc := range []struct {
		rec  *kgo.Record
		n    int
		want int
	}{
		{&kgo.Record{Partition: 2, Key: []byte("a")}, 4, 2},
		{&kgo.Record{Partition: 5, Key: []byte("a")}, 4, kgo.StickyKeyPartitioner(nil).ForTopic("t").Partition(&kgo.Record{Key: []byte("a")}, 4)},
		{&kgo.Record{Partition: -1, Key: []byte("a")}, 4, kgo.StickyKeyPartitioner(nil).ForTopic("t").Partition(&kgo.Record{Key: []byte("a")}, 4)},
	} {
		if got := p.Partition(tc.rec, tc.n); got != tc.want {
			t.Errorf("partition of %+v among %d: %d, want %d", tc.rec, tc.n, got, tc.want)
		}
	}
	seen := map[int]bool{}
	for range 4 {
		seen[p.Partition(&kgo.Record{Partition: -1}, 4)] = true
	}
	if len(seen) != 4 {
		t.Errorf("keyless records went to %v, want round robin over 4", seen)
	}
}
