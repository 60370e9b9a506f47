package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
)

// These tests prove the broker under test (README: Testing) does what troupe
// relies on: ordered produce/consume, transactions seen through
// read_committed, log compaction, and surviving a dead broker. Each test
// makes its own topics, so they are independent.

func TestMain(m *testing.M) { kafkaharness.Main(m) }

// topicName makes a topic name unique to this test and run.
func topicName(t *testing.T, what string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("%s-%s-%s", name, what, hex.EncodeToString(b[:]))
}

func newClient(t *testing.T, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, partitions int32, rf int16, configs map[string]string) {
	t.Helper()
	cfg := map[string]*string{}
	for k, v := range configs {
		cfg[k] = kadm.StringPtr(v)
	}
	if _, err := adm.CreateTopic(ctx, partitions, rf, cfg, topic); err != nil {
		t.Fatalf("create topic %s (partitions %d, rf %d, %v): %v", topic, partitions, rf, configs, err)
	}
}

// consumeN polls cl until it has n records or ctx ends.
func consumeN(t *testing.T, ctx context.Context, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before %v", len(recs), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// readAll reads topic from the start up to its current high watermark (no
// control records at the end, so the last offset is a data record).
func readAll(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) []*kgo.Record {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaharness.Brokers()...),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d records, partitions %v not read to their end: %v", topic, len(recs), left, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			if end, ok := left[r.Partition]; ok && r.Offset >= end-1 {
				delete(left, r.Partition)
			}
		})
	}
	return recs
}

// TestProduceConsumeInOrder produces 10,000 keyed records to 3 partitions
// and reads them all back: each exactly once, at the offset the producer was
// told, in order within each partition and each key.
func TestProduceConsumeInOrder(t *testing.T) {
	const n, keys = 10_000, 100
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topic := topicName(t, "orders")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, topic, 3, 1, nil)

	prod := newClient(t, kafkaharness.Brokers(), kgo.DefaultProduceTopic(topic))
	type pos struct {
		p   int32
		off int64
	}
	produced := make([]pos, n) // callbacks write distinct elements
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		r := &kgo.Record{Key: fmt.Appendf(nil, "key-%03d", i%keys), Value: []byte(strconv.Itoa(i))}
		prod.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				errs <- fmt.Errorf("record %d: %w", i, err)
				return
			}
			produced[i] = pos{r.Partition, r.Offset}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatalf("produce: %v", err)
	}
	t.Logf("produced %d records in %s", n, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	cons := newClient(t, kafkaharness.Brokers(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := consumeN(t, ctx, cons, n)
	t.Logf("consumed %d records in %s", len(recs), time.Since(start).Round(time.Millisecond))
	if len(recs) != n {
		t.Fatalf("consumed %d records, want %d", len(recs), n)
	}

	seen := make([]bool, n)
	nextOff := map[int32]int64{}
	lastOfKey := map[string]int{}
	for _, r := range recs {
		i, err := strconv.Atoi(string(r.Value))
		if err != nil || i < 0 || i >= n {
			t.Fatalf("record %s/%d@%d: bad value %q", r.Topic, r.Partition, r.Offset, r.Value)
		}
		if seen[i] {
			t.Fatalf("record %d consumed twice (second at %d@%d)", i, r.Partition, r.Offset)
		}
		seen[i] = true
		if want := fmt.Sprintf("key-%03d", i%keys); string(r.Key) != want {
			t.Errorf("record %d: key %q, want %q", i, r.Key, want)
		}
		if got, want := (pos{r.Partition, r.Offset}), produced[i]; got != want {
			t.Errorf("record %d consumed at %d@%d, produced to %d@%d", i, got.p, got.off, want.p, want.off)
		}
		if r.Offset != nextOff[r.Partition] {
			t.Fatalf("partition %d: offset %d after %d (gap or reorder)", r.Partition, r.Offset, nextOff[r.Partition]-1)
		}
		nextOff[r.Partition]++
		if last, ok := lastOfKey[string(r.Key)]; ok && i <= last {
			t.Fatalf("key %s: record %d after %d", r.Key, i, last)
		}
		lastOfKey[string(r.Key)] = i
	}
	if len(nextOff) != 3 {
		t.Errorf("records landed in %d partitions, want 3: %v", len(nextOff), nextOff)
	}
}

// TestTransactionsReadCommitted commits a batch, aborts one, commits
// another: a read_committed consumer sees exactly the committed records, in
// order, while the aborted ones are physically in the log.
func TestTransactionsReadCommitted(t *testing.T) {
	const batch = 100
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topic := topicName(t, "txn")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, topic, 2, 1, nil)

	prod := newClient(t, kafkaharness.Brokers(),
		kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(topicName(t, "txid")),
	)
	txn := func(name string, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatalf("begin %s: %v", name, err)
		}
		recs := make([]*kgo.Record, batch)
		for i := range recs {
			recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "%s-%03d", name, i)}
		}
		// Produce synchronously so even the aborted records reach the log.
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", name, err)
		}
		if err := prod.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("end %s: %v", name, err)
		}
	}
	start := time.Now()
	txn("committed-a", kgo.TryCommit)
	txn("aborted", kgo.TryAbort)
	txn("committed-b", kgo.TryCommit)
	t.Logf("3 transactions in %s", time.Since(start).Round(time.Millisecond))

	rc := newClient(t, kafkaharness.Brokers(),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	// committed-b follows the aborted batch in every partition, so having
	// all of it means read_committed has read past the aborted records.
	got := consumeN(t, ctx, rc, 2*batch)
	want := map[string]bool{}
	for i := range batch {
		want[fmt.Sprintf("committed-a-%03d", i)] = true
		want[fmt.Sprintf("committed-b-%03d", i)] = true
	}
	lastB := map[int32]int{} // per partition, index of the batch last seen
	for _, r := range got {
		v := string(r.Value)
		if !want[v] {
			t.Errorf("read_committed returned %q at %d@%d (aborted or duplicate)", v, r.Partition, r.Offset)
			continue
		}
		delete(want, v)
		b := 0
		if strings.HasPrefix(v, "committed-b") {
			b = 1
		}
		if b < lastB[r.Partition] {
			t.Errorf("partition %d: %q after a committed-b record", r.Partition, v)
		}
		lastB[r.Partition] = b
	}
	if len(want) > 0 {
		t.Errorf("read_committed missed %d committed records", len(want))
	}
	// Nothing more (in particular no aborted record) is waiting.
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	if extra := rc.PollFetches(pctx).Records(); len(extra) > 0 {
		t.Errorf("read_committed returned %d extra records, first %q", len(extra), extra[0].Value)
	}
	pcancel()

	ru := newClient(t, kafkaharness.Brokers(),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
	)
	aborted := 0
	for _, r := range consumeN(t, ctx, ru, 3*batch) {
		if strings.HasPrefix(string(r.Value), "aborted") {
			aborted++
		}
	}
	if aborted != batch {
		t.Errorf("read_uncommitted saw %d aborted records, want %d", aborted, batch)
	}
}

// TestCompaction writes several values per key to a compacted topic and
// waits for the log cleaner: reading from the start then returns only each
// key's last value, with the older ones gone.
func TestCompaction(t *testing.T) {
	const keys, versions = 20, 10
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topic := topicName(t, "compact")
	adm := kadm.NewClient(newClient(t, kafkaharness.Brokers()))
	createTopic(t, ctx, adm, topic, 1, 1, map[string]string{
		"cleanup.policy":            "compact",
		"segment.ms":                "100", // roll on the first append 100 ms after a segment opens
		"min.cleanable.dirty.ratio": "0.01",
		"min.compaction.lag.ms":     "0",
		"delete.retention.ms":       "100",
	})

	prod := newClient(t, kafkaharness.Brokers(), kgo.DefaultProduceTopic(topic))
	for v := range versions {
		var recs []*kgo.Record
		for k := range keys {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%02d", k), Value: fmt.Appendf(nil, "k%02d-v%02d", k, v)})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// The cleaner never touches the active segment, and a segment only rolls
	// on an append, so keep appending a filler record: each one rolls the
	// segment before it, making the keyed records cleanable.
	start := time.Now()
	var recs []*kgo.Record
	for attempt := 0; ; attempt++ {
		time.Sleep(500 * time.Millisecond)
		filler := &kgo.Record{Key: []byte("filler"), Value: []byte(strconv.Itoa(attempt))}
		if err := prod.ProduceSync(ctx, filler).FirstErr(); err != nil {
			t.Fatal(err)
		}
		recs = readAll(t, ctx, adm, topic)
		keyed := 0
		for _, r := range recs {
			if string(r.Key) != "filler" {
				keyed++
			}
		}
		if keyed == keys {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("after %s, %d keyed records remain of %d written; want %d (one per key): the cleaner did not run",
				time.Since(start).Round(time.Second), keyed, keys*versions, keys)
		}
	}
	t.Logf("compacted in %s", time.Since(start).Round(100*time.Millisecond))

	last := map[string]string{}
	var gaps int
	prev := int64(-1)
	for _, r := range recs {
		if r.Offset != prev+1 {
			gaps++
		}
		prev = r.Offset
		if string(r.Key) != "filler" {
			last[string(r.Key)] = string(r.Value)
		}
	}
	for k := range keys {
		key := fmt.Sprintf("k%02d", k)
		if want := fmt.Sprintf("%s-v%02d", key, versions-1); last[key] != want {
			t.Errorf("key %s: value %q after compaction, want %q", key, last[key], want)
		}
	}
	if gaps == 0 {
		t.Errorf("offsets are contiguous after compaction: nothing was removed")
	}
}

// TestThreeBrokerFailover runs its own 3-node cluster: a replication factor
// 3 topic keeps taking acks=all writes and serving reads after the leader of
// partition 0 is killed, with every record exactly once, and the killed node
// rejoins.
func TestThreeBrokerFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster (~10 s); run without -short")
	}
	const perPhase = 500
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	c := kafkaharness.StartCluster(t, 3)
	t.Logf("3-node cluster up in %s", time.Since(start).Round(10*time.Millisecond))
	if c.Fake() {
		// kfake (2026-09-18) answers OffsetForLeaderEpoch after a leader
		// change so that a consumer which had already fetched is reset
		// with "lost records": a kfake bug, not a Kafka behaviour.
		t.Skip("kfake mishandles a consumer across a leader change; this test needs the real broker")
	}

	topic := topicName(t, "replicated")
	adm := kadm.NewClient(newClient(t, c.Addrs()))
	createTopic(t, ctx, adm, topic, 3, 3, map[string]string{"min.insync.replicas": "2"})

	// A short metadata age lets the clients find new leaders as soon as the
	// controller has fenced the dead node (franz-go's default waits 5 s).
	prod := newClient(t, c.Addrs(),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	cons := newClient(t, c.Addrs(),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	produce := func(phase string) {
		t.Helper()
		begin := time.Now()
		var recs []*kgo.Record
		for i := range perPhase {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%17), Value: fmt.Appendf(nil, "%s-%03d", phase, i)})
		}
		pctx, pcancel := context.WithTimeout(ctx, 60*time.Second)
		defer pcancel()
		if err := prod.ProduceSync(pctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", phase, err)
		}
		t.Logf("produced %d %s records in %s", perPhase, phase, time.Since(begin).Round(time.Millisecond))
	}
	seen := map[string]bool{}
	consume := func(phase string) {
		t.Helper()
		begin := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
		defer ccancel()
		for _, r := range consumeN(t, cctx, cons, perPhase) {
			v := string(r.Value)
			if seen[v] {
				t.Errorf("%q consumed twice", v)
			}
			seen[v] = true
		}
		t.Logf("consumed %d %s records in %s", perPhase, phase, time.Since(begin).Round(time.Millisecond))
	}

	produce("before")
	consume("before")

	td, err := adm.ListTopics(ctx, topic)
	if err != nil || td[topic].Err != nil {
		t.Fatalf("describe %s: %v %v", topic, err, td[topic].Err)
	}
	leader := td[topic].Partitions[0].Leader
	victim := -1
	for i := range 3 {
		if c.NodeID(i) == leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("leader %d of partition 0 is not a node of the cluster", leader)
	}
	if err := c.KillBroker(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed node %d, the leader of partition 0", leader)

	produce("after-kill")
	consume("after-kill")

	begin := time.Now()
	if err := c.StartBroker(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d restarted in %s", leader, time.Since(begin).Round(10*time.Millisecond))
	if !c.Fake() { // kfake does not replicate, so has no ISR to rejoin
		for {
			td, err := adm.ListTopics(ctx, topic)
			if err == nil && td[topic].Err == nil && len(td[topic].Partitions[0].ISR) == 3 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %d did not rejoin the ISR of partition 0: %+v", leader, td[topic].Partitions[0])
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("node %d back in the ISR %s after restart", leader, time.Since(begin).Round(10*time.Millisecond))
	}
	produce("after-restart")
	consume("after-restart")
	if len(seen) != 3*perPhase {
		t.Errorf("consumed %d distinct records, want %d", len(seen), 3*perPhase)
	}
}
