package dlq_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// size is a record's size as franz-go measures it against
// ProducerBatchMaxBytes, without the framing.
func size(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

func bigValue(n int) []byte {
	v := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	v[0] = 0 // Confluent framing, as a real event's
	return v
}

func checkProvenance(t *testing.T, dl *kgo.Record, orig *kgo.Record) {
	t.Helper()
	want := map[string]string{
		dlq.HeaderTopic: orig.Topic, dlq.HeaderPartition: fmt.Sprint(orig.Partition), dlq.HeaderOffset: fmt.Sprint(orig.Offset),
		dlq.HeaderStep: "payment", dlq.HeaderAttempts: "1",
	}
	for k, v := range want {
		if got := header(dl, k); got != v {
			t.Errorf("provenance header %s = %q, want %q", k, got, v)
		}
	}
}

func parsed(t *testing.T, dl *kgo.Record) dlq.DeadLetter {
	t.Helper()
	d, err := dlq.Parse(dl)
	if err != nil {
		t.Fatalf("a cut dead letter does not parse: %v", err)
	}
	return d
}

// The issue-13 record: a 1,000,000-byte value made a 1,000,301-byte dead
// letter that franz-go refused at every attempt.
func TestDeadLetterOfHugeValueFits(t *testing.T) {
	orig := original()
	orig.Value = bigValue(1_000_000)
	dl := dlq.NewDeadLetter(orig, "payment", errors.New(strings.Repeat("boom ", 100_000)), 1, failedAt)
	if n := size(dl); n > dlq.MaxBytes {
		t.Fatalf("dead letter is %d bytes, over dlq.MaxBytes %d", n, dlq.MaxBytes)
	}
	if dl.Value != nil {
		t.Errorf("value kept (%d bytes)", len(dl.Value))
	}
	if string(dl.Key) != "order-1" || dl.Partition != 3 {
		t.Errorf("key %q partition %d, want order-1 on 3", dl.Key, dl.Partition)
	}
	checkProvenance(t, dl, orig)
	if e := header(dl, dlq.HeaderError); len(e) > dlq.MaxErrorBytes || !strings.HasPrefix(e, "boom boom") {
		t.Errorf("error header is %d bytes, want at most %d", len(e), dlq.MaxErrorBytes)
	}
	d := parsed(t, dl)
	if d.Event.ID != "0190-id" || d.Event.Type != "troupe.example.orders.OrderPlaced" || header(dl, "traceparent") != "00-abc-def-01" {
		t.Errorf("small headers not kept: %+v", d.Event)
	}
	cuts := d.Cuts()
	want := dlq.Cut{Part: dlq.CutValue, Bytes: 1_000_000, SHA256: sha(orig.Value)}
	if len(cuts) != 1 || cuts[0] != want {
		t.Fatalf("cuts %+v, want [%+v]", cuts, want)
	}
	if s := cuts[0].String(); !strings.Contains(s, "value (1000000 bytes, sha256 "+want.SHA256[:8]) {
		t.Errorf("cut described as %q", s)
	}
}

// A record that fits stays as it was: no cut header.
func TestDeadLetterUnderTheLimitIsWhole(t *testing.T) {
	orig := original()
	orig.Value = bigValue(dlq.MaxBytes - 2000)
	dl := dlq.NewDeadLetter(orig, "payment", errors.New("x"), 1, failedAt)
	if !bytes.Equal(dl.Value, orig.Value) || len(parsed(t, dl).Cuts()) != 0 {
		t.Fatalf("a %d-byte value was cut: %+v", len(orig.Value), parsed(t, dl).Cuts())
	}
}

func TestDeadLetterCutsHeadersAndKey(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(r *kgo.Record)
		parts []string // what is cut, in order
		kept  []string // headers still there
	}{
		{"big header", func(r *kgo.Record) {
			r.Value = bigValue(400_000)
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "blob", Value: bigValue(995_000)}, kgo.RecordHeader{Key: "note", Value: []byte("small")})
		}, []string{dlq.CutValue, dlq.CutHeader}, []string{"ce_id", "traceparent", "note"}},
		{"many small headers", func(r *kgo.Record) {
			for i := range 30_000 {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: fmt.Sprintf("h%05d", i), Value: bytes.Repeat([]byte("v"), 40)})
			}
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "ce_id", Value: []byte("a second ce_id")})
		}, []string{dlq.CutValue, dlq.CutHeaders}, []string{"ce_id", "ce_type", "traceparent"}},
		{"huge key", func(r *kgo.Record) { r.Key = bigValue(1_200_000) }, []string{dlq.CutValue, dlq.CutKey}, []string{"ce_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := original()
			tt.edit(orig)
			dl := dlq.NewDeadLetter(orig, "payment", errors.New("x"), 1, failedAt)
			if n := size(dl); n > dlq.MaxBytes {
				t.Fatalf("dead letter is %d bytes, over %d", n, dlq.MaxBytes)
			}
			checkProvenance(t, dl, orig)
			var parts []string
			for _, c := range parsed(t, dl).Cuts() {
				parts = append(parts, c.Part)
				if c.Bytes == 0 || len(c.SHA256) != 64 {
					t.Errorf("cut %+v lacks its size or hash", c)
				}
			}
			if fmt.Sprint(parts) != fmt.Sprint(tt.parts) {
				t.Errorf("cut %v, want %v", parts, tt.parts)
			}
			for _, k := range tt.kept {
				if _, ok := headerOK(dl, k); !ok {
					t.Errorf("header %s cut", k)
				}
			}
		})
	}
}

func headerOK(r *kgo.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// cutEnv is kfake with the source topic "orders" holding one huge event at
// offset 0 and the step's DLQ holding its dead letter.
type cutEnv struct {
	c    *kfake.Cluster
	cfg  kafka.Config
	adm  *kadm.Client
	orig *kgo.Record
	q    *dlq.Queue
}

func newCutEnv(t *testing.T, ctx context.Context, value []byte, headers ...kgo.RecordHeader) *cutEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", dlqTopic, retryTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &cutEnv{c: c, cfg: kafka.Config{Brokers: c.ListenAddrs()}}
	// The producer of the huge event is configured as Kafka's Java
	// producer would be: a larger batch limit than franz-go's default.
	big, err := kafka.NewClient(ctx, e.cfg, kgo.ProducerBatchMaxBytes(1_048_588), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(big.Close)
	e.adm = kadm.NewClient(big)
	e.orig = original()
	e.orig.Topic, e.orig.Partition, e.orig.Value = "orders", 0, value
	e.orig.Headers = append(e.orig.Headers, headers...)
	if err := big.ProduceSync(ctx, e.orig).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The step's producer keeps franz-go's default.
	step, err := kafka.NewClient(ctx, e.cfg, kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(step.Close)
	dl := dlq.NewDeadLetter(e.orig, "payment", errors.New("too big to handle"), 1, failedAt)
	dl.Topic = dlqTopic
	if err := step.ProduceSync(ctx, dl).FirstErr(); err != nil {
		t.Fatalf("the step's producer refused the dead letter (%d bytes): %v", size(dl), err)
	}
	e.q, err = dlq.Open(ctx, e.cfg, "payment", dlqTopic, retryTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.q.Close)
	return e
}

// Without the cut, franz-go's default producer refuses the dead letter:
// what stalled the step (kept to notice if franz-go's default changes).
func TestUncutDeadLetterIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newCutEnv(t, ctx, bigValue(1_000_000))
	cl, err := kafka.NewClient(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	whole := *e.orig
	whole.Topic = dlqTopic
	whole.Headers = append(whole.Headers, kgo.RecordHeader{Key: dlq.HeaderTopic, Value: []byte("orders")})
	if err := cl.ProduceSync(ctx, &whole).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("producing a %d-byte record with franz-go's defaults: %v, want MESSAGE_TOO_LARGE", size(&whole), err)
	}
}

// Replaying a cut dead letter reads the value back from the source and
// writes the whole event to the retry topic; once the source no longer
// holds it, the replay fails and names where it looked.
func TestReplayOfCutDeadLetter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newCutEnv(t, ctx, bigValue(1_000_000))

	d, err := e.q.Get(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Record.Value != nil || len(d.Cuts()) != 1 {
		t.Fatalf("dead letter as read: %d-byte value, cuts %+v", len(d.Record.Value), d.Cuts())
	}
	var sent *kgo.Record
	if n, err := e.q.Replay(ctx, dlq.At(0, 0), dlq.SendOptions{OnSent: func(_ dlq.DeadLetter, r *kgo.Record) { sent = r }}); err != nil || n != 1 {
		t.Fatalf("replay of a cut dead letter: %d, %v", n, err)
	}
	got := readAll(t, ctx, e.cfg, retryTopic)
	if len(got) != 1 {
		t.Fatalf("retry topic holds %d records, want 1", len(got))
	}
	r := got[0]
	if !bytes.Equal(r.Value, e.orig.Value) || string(r.Key) != "order-1" || sent == nil {
		t.Fatalf("replay: key %q, %d-byte value (sha256 %s), want the original %d bytes", r.Key, len(r.Value), sha(r.Value)[:8], len(e.orig.Value))
	}
	if header(r, "ce_id") != "0190-id" || header(r, dlq.HeaderReplayCount) != "1" {
		t.Errorf("replay headers: %v", r.Headers)
	}
	for _, h := range r.Headers {
		if strings.HasPrefix(h.Key, "troupe_dlq_") {
			t.Errorf("replay carries %s", h.Key)
		}
	}

	// The source's retention moves past the record.
	if _, err := e.adm.DeleteRecords(ctx, kadm.Offsets{"orders": {0: {At: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.q.Replay(ctx, dlq.At(0, 0), dlq.SendOptions{Force: true})
	if !errors.Is(err, dlq.ErrNotRetained) {
		t.Fatalf("replay once the source is gone: %v, want ErrNotRetained", err)
	}
	for _, want := range []string{"orders partition 0 offset 0", "value (1000000 bytes, sha256 "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// Cut headers come back with a replay too, in their place.
func TestReplayOfCutHeaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	blob := kgo.RecordHeader{Key: "blob", Value: bigValue(995_000)}
	e := newCutEnv(t, ctx, []byte{0, 0, 0, 0, 1, 2}, blob, kgo.RecordHeader{Key: "note", Value: []byte("n")})
	d, err := e.q.Get(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cuts := d.Cuts(); len(cuts) != 2 || cuts[1].Part != dlq.CutHeader || cuts[1].Name != "blob" {
		t.Fatalf("cuts %+v, want the value and header blob", cuts)
	}
	if _, err := e.q.Replay(ctx, dlq.At(0, 0), dlq.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, ctx, e.cfg, retryTopic)
	if len(got) != 1 {
		t.Fatalf("retry topic holds %d records, want 1", len(got))
	}
	var keys []string
	for _, h := range got[0].Headers {
		keys = append(keys, h.Key)
	}
	if v, _ := headerOK(got[0], "blob"); v != string(blob.Value) || !bytes.Equal(got[0].Value, e.orig.Value) {
		t.Fatalf("replay lacks the original value or header blob: headers %v", keys)
	}
	if !strings.HasSuffix(strings.Join(keys, " "), "traceparent blob note troupe_replay_count troupe_replayed_from_topic troupe_replayed_from_partition troupe_replayed_from_offset") {
		t.Errorf("replay headers in the order %v", keys)
	}
}

// A source that holds another record at the coordinates (the topic was
// recreated) is not replayed in the dead letter's name.
func TestReplayOfCutDeadLetterChecksTheHash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newCutEnv(t, ctx, bigValue(1_000_000))
	if _, err := e.adm.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.adm.CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(ctx, e.cfg, kgo.UnknownTopicRetries(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte("order-1"), Value: []byte("another")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	_, err = e.q.Replay(ctx, dlq.At(0, 0), dlq.SendOptions{})
	if err == nil || !strings.Contains(err.Error(), "holds another value") || !strings.Contains(err.Error(), "orders partition 0 offset 0") {
		t.Fatalf("replay against another record at the source: %v", err)
	}
	if got := readAll(t, ctx, e.cfg, retryTopic); len(got) != 0 {
		t.Fatalf("wrote %d records to the retry topic", len(got))
	}
}

func readAll(t *testing.T, ctx context.Context, cfg kafka.Config, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kafka.NewClient(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	spans, err := replay.Spans(ctx, kadm.NewClient(cl), topic, replay.FromOffset(0))
	if err != nil {
		t.Fatal(err)
	}
	var out []*kgo.Record
	if err := replay.Scan(ctx, cfg, topic, spans, func(r *kgo.Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}
