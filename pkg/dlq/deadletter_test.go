package dlq_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
)

var failedAt = time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC)

func original() *kgo.Record {
	meta := event.Metadata{ID: "0190-id", Source: "client", Type: "troupe.example.orders.OrderPlaced", SagaID: "order-1", CorrelationID: "order-1", Time: failedAt.Add(-time.Minute)}
	return &kgo.Record{
		Topic: "orders", Partition: 3, Offset: 41,
		Key: []byte("order-1"), Value: []byte{0, 0, 0, 0, 7, 2, 4},
		Headers:   append(meta.Headers(), kgo.RecordHeader{Key: "traceparent", Value: []byte("00-abc-def-01")}),
		Timestamp: failedAt.Add(-time.Minute),
	}
}

func header(r *kgo.Record, k string) string {
	v, _ := event.Header(r, k)
	return v
}

func TestDeadLetterRoundTrip(t *testing.T) {
	orig := original()
	dl := dlq.NewDeadLetter(orig, "payment", errors.New("gateway: 503"), 5, failedAt)
	if string(dl.Key) != "order-1" || string(dl.Value) != string(orig.Value) || dl.Partition != 3 || !dl.Timestamp.Equal(failedAt) {
		t.Fatalf("dead letter key %q value %v partition %d ts %s", dl.Key, dl.Value, dl.Partition, dl.Timestamp)
	}
	// The original headers come first, unchanged and in order.
	for i, h := range orig.Headers {
		if dl.Headers[i].Key != h.Key || string(dl.Headers[i].Value) != string(h.Value) {
			t.Fatalf("header %d is %s=%s, want %s=%s", i, dl.Headers[i].Key, dl.Headers[i].Value, h.Key, h.Value)
		}
	}
	want := map[string]string{
		dlq.HeaderTopic: "orders", dlq.HeaderPartition: "3", dlq.HeaderOffset: "41", dlq.HeaderStep: "payment",
		dlq.HeaderError: "gateway: 503", dlq.HeaderAttempts: "5", dlq.HeaderFailedAt: "2026-03-04T05:06:07.89Z",
	}
	for k, v := range want {
		if got := header(dl, k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(dl.Headers) != len(orig.Headers)+7 {
		t.Errorf("%d headers, want %d", len(dl.Headers), len(orig.Headers)+7)
	}

	dl.Topic, dl.Partition, dl.Offset = "orders.payment.dlq", 3, 7 // as read back
	d, err := dlq.Parse(dl)
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != (dlq.Coordinates{Topic: "orders", Partition: 3, Offset: 41}) || d.Step != "payment" || d.Error != "gateway: 503" ||
		d.Attempts != 5 || !d.FailedAt.Equal(failedAt) || d.ReplayCount != 0 || d.Event.ID != "0190-id" ||
		d.Event.Type != "troupe.example.orders.OrderPlaced" || d.At().String() != "orders.payment.dlq/3@7" {
		t.Errorf("parsed %+v", d)
	}
}

func TestNewDeadLetterEdgeCases(t *testing.T) {
	long := strings.Repeat("é", dlq.MaxErrorBytes)
	dl := dlq.NewDeadLetter(&kgo.Record{Topic: "t", Value: []byte("garbage")}, "s", errors.New(long), 1, failedAt)
	msg := header(dl, dlq.HeaderError)
	if len(msg) > dlq.MaxErrorBytes || !strings.HasSuffix(msg, "(truncated)") || !strings.HasPrefix(msg, "éé") {
		t.Errorf("long error kept as %d bytes ending %q", len(msg), msg[len(msg)-20:])
	}
	if _, err := dlq.Parse(dl); err != nil {
		t.Errorf("keyless, headerless record: %v", err)
	}
	// A dead letter of a dead letter replaces the provenance, not adds to it.
	again := dlq.NewDeadLetter(dl, "s", nil, 2, failedAt)
	n := 0
	for _, h := range again.Headers {
		if h.Key == dlq.HeaderAttempts {
			n++
		}
	}
	if n != 1 || header(again, dlq.HeaderAttempts) != "2" || header(again, dlq.HeaderError) != "" {
		t.Errorf("%d attempts headers, attempts %q, error %q", n, header(again, dlq.HeaderAttempts), header(again, dlq.HeaderError))
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"plain record", nil, "no troupe_dlq_topic header"},
		{"bad partition", map[string]string{dlq.HeaderTopic: "t", dlq.HeaderPartition: "x", dlq.HeaderOffset: "1", dlq.HeaderStep: "s", dlq.HeaderFailedAt: "2026-01-01T00:00:00Z"}, `troupe_dlq_partition="x" is malformed`},
		{"bad time", map[string]string{dlq.HeaderTopic: "t", dlq.HeaderPartition: "1", dlq.HeaderOffset: "1", dlq.HeaderStep: "s", dlq.HeaderFailedAt: "yesterday"}, `troupe_dlq_failed_at="yesterday" is malformed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &kgo.Record{Key: []byte("k")}
			for k, v := range tc.headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
			d, err := dlq.Parse(r)
			if !errors.Is(err, dlq.ErrNotDeadLetter) || !strings.Contains(err.Error(), tc.want) || d.Malformed != err || d.Record != r {
				t.Fatalf("Parse: %v (malformed %v), want ErrNotDeadLetter with %q", err, d.Malformed, tc.want)
			}
		})
	}
}

func TestReplayCounterIncrements(t *testing.T) {
	dl := dlq.NewDeadLetter(original(), "payment", errors.New("boom"), 5, failedAt)
	dl.Topic, dl.Partition, dl.Offset = "orders.payment.dlq", 3, 7
	d, _ := dlq.Parse(dl)

	r1 := dlq.Replay(d, "orders.payment.retry")
	if r1.Topic != "orders.payment.retry" || string(r1.Key) != "order-1" || string(r1.Value) != string(dl.Value) || r1.Partition != 3 {
		t.Fatalf("replay %+v", r1)
	}
	for _, h := range r1.Headers {
		if strings.HasPrefix(h.Key, "troupe_dlq_") {
			t.Errorf("replay keeps provenance header %s", h.Key)
		}
	}
	orig := original()
	for i, h := range orig.Headers {
		if r1.Headers[i].Key != h.Key || string(r1.Headers[i].Value) != string(h.Value) {
			t.Errorf("replay header %d = %s, want the original %s", i, r1.Headers[i].Key, h.Key)
		}
	}
	if dlq.ReplayCount(r1) != 1 {
		t.Errorf("first replay count %d", dlq.ReplayCount(r1))
	}
	if from, ok := dlq.ReplayedFrom(r1); !ok || from.String() != "orders.payment.dlq/3@7" {
		t.Errorf("replayed from %v %v", from, ok)
	}
	if _, ok := dlq.ParseDiscard(r1); ok {
		t.Error("a replay parses as a discard")
	}

	// The replay fails again: consumed from the retry topic, dead-lettered.
	r1.Offset = 12
	dl2 := dlq.NewDeadLetter(r1, "payment", errors.New("boom again"), 5, failedAt.Add(time.Hour))
	dl2.Topic, dl2.Partition, dl2.Offset = "orders.payment.dlq", 3, 9
	d2, err := dlq.Parse(dl2)
	if err != nil {
		t.Fatal(err)
	}
	if d2.ReplayCount != 1 || d2.Source.String() != "orders.payment.retry/3@12" {
		t.Errorf("second dead letter: replay count %d, source %s", d2.ReplayCount, d2.Source)
	}
	r2 := dlq.Replay(d2, "orders.payment.retry")
	if dlq.ReplayCount(r2) != 2 {
		t.Errorf("second replay count %d, want 2", dlq.ReplayCount(r2))
	}
	if from, _ := dlq.ReplayedFrom(r2); from.Offset != 9 {
		t.Errorf("second replay from %v, want offset 9", from)
	}
	n := 0
	for _, h := range r2.Headers {
		if strings.HasPrefix(h.Key, "troupe_replay") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("second replay has %d troupe_replay* headers, want 4 (count and 3 coordinates)", n)
	}
}

func TestDiscardMarker(t *testing.T) {
	dl := dlq.NewDeadLetter(original(), "payment", errors.New("boom"), 5, failedAt)
	dl.Topic, dl.Partition, dl.Offset = "orders.payment.dlq", 3, 7
	d, _ := dlq.Parse(dl)
	m := dlq.Discard(d, "orders.payment.retry")
	if m.Topic != "orders.payment.retry" || string(m.Key) != "order-1" || m.Value != nil || m.Partition != 3 {
		t.Fatalf("discard marker %+v", m)
	}
	if _, err := event.FromRecord(m); err != nil || header(m, event.HeaderID) != "" || header(m, event.HeaderType) != "" {
		t.Errorf("a discard marker must not look like an event: %v", m.Headers)
	}
	got, ok := dlq.ParseDiscard(m)
	if !ok || string(got.Key) != "order-1" || got.EventID != "0190-id" || got.EventType != "troupe.example.orders.OrderPlaced" || got.From.String() != "orders.payment.dlq/3@7" {
		t.Errorf("ParseDiscard = %+v, %v", got, ok)
	}
	if _, ok := dlq.ParseDiscard(original()); ok {
		t.Error("an event parses as a discard")
	}
}

func ExampleNewDeadLetter() {
	in := &kgo.Record{Topic: "orders", Partition: 2, Offset: 17, Key: []byte("order-42"), Value: []byte("...")}
	dl := dlq.NewDeadLetter(in, "payment", errors.New("card service: timeout"), 5, time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	dl.Topic = "orders.payment.dlq"
	for _, h := range dl.Headers {
		fmt.Printf("%s=%s\n", h.Key, h.Value)
	}
	// Output:
	// troupe_dlq_topic=orders
	// troupe_dlq_partition=2
	// troupe_dlq_offset=17
	// troupe_dlq_step=payment
	// troupe_dlq_error=card service: timeout
	// troupe_dlq_attempts=5
	// troupe_dlq_failed_at=2026-05-01T12:00:00Z
}
