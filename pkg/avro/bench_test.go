package avro_test

import (
	"context"
	"testing"

	"github.com/troupehq/troupe/pkg/example/orders"
)

// BenchmarkEncode and BenchmarkDecode measure the hot path of a step: the
// schema id and resolved schema come from the cache, so the registry is not
// involved. Run with -benchmem: Encode allocates only the returned value;
// Decode allocates the Go value and its strings and slices, nothing else.
func BenchmarkEncode(b *testing.B) {
	ctx := context.Background()
	s := newOrdersSerde(b, newFakeRegistry())
	ev := sampleOrder()
	if _, err := s.Encode(ctx, "orders", ev); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Encode(ctx, "orders", &ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	ctx := context.Background()
	s := newOrdersSerde(b, newFakeRegistry())
	value, err := s.Encode(ctx, "orders", sampleOrder())
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := s.Decode(ctx, value); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		if _, v, err := s.Decode(ctx, value); err != nil {
			b.Fatal(err)
		} else if _, ok := v.(orders.OrderPlaced); !ok {
			b.Fatal(v)
		}
	}
}

// BenchmarkDecodeJSON is the CLI's tail path, for comparison; not hot.
func BenchmarkDecodeJSON(b *testing.B) {
	ctx := context.Background()
	s := newOrdersSerde(b, newFakeRegistry())
	value, err := s.Encode(ctx, "orders", sampleOrder())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.DecodeJSON(ctx, value); err != nil {
			b.Fatal(err)
		}
	}
}
