package avro_test

import (
	"context"
	"testing"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
)

// FuzzDecode feeds arbitrary bytes to Decode and DecodeJSON: they may fail,
// but never panic, hang or allocate without bound. The registry knows
// OrderPlaced (id 1) and the kitchen-sink schema (id 2); the seed corpus in
// testdata/fuzz/FuzzDecode runs in every plain `go test`. When fuzzing, pass
// -fuzzminimizetime=200x: minimizing each new input for the default minute
// otherwise looks like a stall (0 execs/sec).
func FuzzDecode(f *testing.F) {
	ctx := context.Background()
	reg := newFakeRegistry()
	s := newOrdersSerde(f, reg)
	if err := s.Register(nil, kitchenSink); err != nil {
		f.Fatal(err)
	}
	order, err := s.Encode(ctx, "orders", sampleOrder())
	if err != nil {
		f.Fatal(err)
	}
	sink, err := s.EncodeJSON(ctx, "sinks", "test.Sink", []byte(`{"id":"s","n":1,"big":2,"ratio":3,"f":4,"ok":false,"raw":"AQ==",
		"at":0,"atMicros":0,"day":0,"price":"1.5","color":"RED","hash":"AAAAAA==","tags":["t"],"attrs":{"k":1},
		"inner":{"x":1,"when":5},"either":"e","note":"n","maybeInner":{"x":2}}`))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Encode(ctx, "stock", orders.OutOfStock{OrderID: "o", SKU: "s"}); err != nil {
		f.Fatal(err)
	}
	f.Add(order)
	f.Add(sink)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0, 0, 0, 0, 2, 2, 's', 2, 4, 0, 0, 0, 0, 0, 0, 0x08, 0x40})
	f.Fuzz(func(t *testing.T, value []byte) {
		name, v, err := s.Decode(ctx, value)
		if err == nil && (name == "" || v == nil) {
			t.Fatalf("no error, but name %q and value %v", name, v)
		}
		_, _, _ = s.DecodeJSON(ctx, value)
		if len(value) >= avro.HeaderSize {
			// The same payload under every known schema.
			for id := byte(1); id <= 3; id++ {
				framed := append([]byte{0, 0, 0, 0, id}, value[avro.HeaderSize:]...)
				_, _, _ = s.Decode(ctx, framed)
				_, _, _ = s.DecodeJSON(ctx, framed)
			}
		}
	})
}

// FuzzParseSchema: any schema text (a .avsc file, a writer schema from the
// registry) parses or fails, never panics. The first seed made hamba/avro
// v2.31.0 panic (index out of range in isValidDefault).
func FuzzParseSchema(f *testing.F) {
	f.Add(`{"type":"record","name":"R","fields":[{"name":"a","type":[],"default":null}]}`)
	f.Add(`{"type":"record","name":"R","fields":[{"name":"a","type":["null","string"],"default":null}]}`)
	f.Add(`{"type":"array","items":{"type":"map","values":"long"}}`)
	f.Fuzz(func(t *testing.T, text string) {
		sch, err := avro.ParseSchema(text)
		if (sch == nil) == (err == nil) {
			t.Fatalf("ParseSchema(%q) = %v, %v: want a schema or an error", text, sch, err)
		}
	})
}
