package event

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestHeadersRoundTrip(t *testing.T) {
	parent := New("troupe.example.orders.OrderPlaced", "troupe-cli", "order-1")
	parent.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	child := CausedBy(parent, "troupe.example.orders.PaymentAuthorized", "orders.payment")

	got, err := FromRecord(&kgo.Record{Key: []byte("order-1"), Headers: child.Headers()})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(child.Time) {
		t.Errorf("time: got %v, want %v", got.Time, child.Time)
	}
	got.Time = child.Time
	if got != child {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, child)
	}
	if got.CausationID != parent.ID || got.CorrelationID != "order-1" || got.TraceParent != parent.TraceParent {
		t.Errorf("causation not kept: %+v", got)
	}
	if v, _ := Header(&kgo.Record{Headers: child.Headers()}, HeaderSpecVersion); v != SpecVersion {
		t.Errorf("specversion = %q", v)
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	a, b := NewID(), NewID()
	if a == b {
		t.Fatal("two ids are equal")
	}
	u, err := uuid.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version() != 7 {
		t.Fatalf("version %d, want 7", u.Version())
	}
}

func TestFromRecordDefaultsAndErrors(t *testing.T) {
	m, err := FromRecord(&kgo.Record{Key: []byte("k")})
	if err != nil || m.SagaID != "k" || m.ID != "" {
		t.Fatalf("bare record: %+v, %v", m, err)
	}
	_, err = FromRecord(&kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderTime, Value: []byte("yesterday")}}})
	if err == nil {
		t.Fatal("malformed ce_time accepted")
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err = FromRecord(&kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderTime, Value: []byte(ts.Format(time.RFC3339))}}})
	if err != nil || !m.Time.Equal(ts) {
		t.Fatalf("RFC 3339 without fraction: %v, %v", m.Time, err)
	}
}
