package avro_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
)

func sampleOrder() orders.OrderPlaced {
	return orders.OrderPlaced{
		OrderID:     "o-1001",
		CustomerID:  "c-42",
		AmountCents: 12999,
		Currency:    "EUR",
		Items:       []orders.LineItem{{SKU: "BOOK-1", Quantity: 2}, {SKU: "PEN-7", Quantity: 1}},
		ShipTo:      orders.Address{Name: "Ada Lovelace", Line1: "12 St James's Square", City: "London", Country: "GB"},
		PlacedAt:    time.Date(2024, 5, 1, 12, 30, 45, 123e6, time.UTC),
	}
}

func newOrdersSerde(t testing.TB, reg avro.Registry, opts ...avro.Option) *avro.Serde {
	t.Helper()
	s := avro.NewSerde(reg, opts...)
	if err := orders.Register(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEncodeDecode(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	s := newOrdersSerde(t, reg)
	in := sampleOrder()

	value, err := s.Encode(ctx, "orders", &in) // a pointer works too
	if err != nil {
		t.Fatal(err)
	}
	if value[0] != 0 {
		t.Fatalf("magic byte = %d", value[0])
	}
	id, _, err := avro.SplitHeader(value)
	if err != nil || id != 1 {
		t.Fatalf("schema id = %d, %v; want 1", id, err)
	}
	if got := reg.subjects["orders-troupe.example.orders.OrderPlaced"]; len(got) != 1 {
		t.Fatalf("subject orders-troupe.example.orders.OrderPlaced = %v; want one version", got)
	}

	name, v, err := s.Decode(ctx, value)
	if err != nil {
		t.Fatal(err)
	}
	if name != "troupe.example.orders.OrderPlaced" {
		t.Fatalf("name = %s", name)
	}
	out, ok := v.(orders.OrderPlaced)
	if !ok {
		t.Fatalf("decoded a %T, want orders.OrderPlaced (a value)", v)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}

	// Ids and writer schemas are cached: one registry call each, ever.
	for range 10 {
		b, err := s.Encode(ctx, "orders", in)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Decode(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.count("register"); n != 1 {
		t.Errorf("register calls = %d, want 1", n)
	}
	if n := reg.count("byid"); n != 1 {
		t.Errorf("schema-by-id calls = %d, want 1", n)
	}
}

func TestTypeName(t *testing.T) {
	s := newOrdersSerde(t, newFakeRegistry())
	for _, v := range []any{orders.OutOfStock{}, &orders.OutOfStock{}} {
		name, err := s.TypeName(v)
		if err != nil || name != "troupe.example.orders.OutOfStock" {
			t.Errorf("TypeName(%T) = %q, %v", v, name, err)
		}
	}
	if _, err := s.TypeName(struct{ X int }{}); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("TypeName of an unregistered type: %v", err)
	}
	if _, err := s.Encode(context.Background(), "t", 42); err == nil {
		t.Error("Encode of an unregistered type succeeded")
	}
}

func TestRegisterChecksTheGoType(t *testing.T) {
	const schema = `{"type":"record","name":"R","namespace":"x","fields":[{"name":"n","type":"long"}]}`
	type good struct {
		N int64 `avro:"n"`
	}
	type wrongType struct {
		N string `avro:"n"`
	}
	type missing struct {
		M int64 `avro:"m"`
	}
	s := avro.NewSerde(newFakeRegistry())
	if err := s.Register(good{}, schema); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(good{}, schema); err != nil {
		t.Fatalf("registering the same type twice: %v", err)
	}
	for _, zero := range []any{wrongType{}, missing{}} {
		err := avro.NewSerde(newFakeRegistry()).Register(zero, schema)
		if err == nil || !strings.Contains(err.Error(), "does not fit") {
			t.Errorf("Register(%T) = %v, want a does-not-fit error", zero, err)
		}
	}
	if err := s.Register(good{}, strings.Replace(schema, `"long"`, `"int"`, 1)); err == nil {
		t.Error("registering x.R again with another schema succeeded")
	}
	if err := s.Register(good{}, `{"type":"record","name":"Other","fields":[{"name":"n","type":"long"}]}`); err == nil {
		t.Error("registering one Go type under two names succeeded")
	}
	if err := s.Register(nil, `{"type":"array","items":"int"}`); err == nil {
		t.Error("registering a non-record schema succeeded")
	}
	if err := s.Register(nil, `{"type":"record"`); err == nil {
		t.Error("registering bad JSON succeeded")
	}
}

// Schema evolution: a v2 reader (added field with a default) reads v1 data,
// and a v1 reader reads v2 data (the new field is skipped).
func TestEvolution(t *testing.T) {
	const v1 = `{"type":"record","name":"Shipment","namespace":"ev","fields":[
		{"name":"orderId","type":"string"},
		{"name":"carrier","type":"string"}]}`
	const v2 = `{"type":"record","name":"Shipment","namespace":"ev","fields":[
		{"name":"orderId","type":"string"},
		{"name":"carrier","type":"string"},
		{"name":"express","type":"boolean","default":true},
		{"name":"note","type":["null","string"],"default":null}]}`
	type shipmentV1 struct {
		OrderID string `avro:"orderId"`
		Carrier string `avro:"carrier"`
	}
	type shipmentV2 struct {
		OrderID string  `avro:"orderId"`
		Carrier string  `avro:"carrier"`
		Express bool    `avro:"express"`
		Note    *string `avro:"note"`
	}
	ctx := context.Background()
	reg := newFakeRegistry()
	old := avro.NewSerde(reg)
	if err := old.Register(shipmentV1{}, v1); err != nil {
		t.Fatal(err)
	}
	cur := avro.NewSerde(reg)
	if err := cur.Register(shipmentV2{}, v2); err != nil {
		t.Fatal(err)
	}

	b1, err := old.Encode(ctx, "shipments", shipmentV1{OrderID: "o-1", Carrier: "DHL"})
	if err != nil {
		t.Fatal(err)
	}
	_, v, err := cur.Decode(ctx, b1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.(shipmentV2), (shipmentV2{OrderID: "o-1", Carrier: "DHL", Express: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("v2 reading v1 = %+v, want %+v", got, want)
	}

	note := "fragile"
	b2, err := cur.Encode(ctx, "shipments", shipmentV2{OrderID: "o-2", Carrier: "UPS", Express: false, Note: &note})
	if err != nil {
		t.Fatal(err)
	}
	if id1, _, _ := avro.SplitHeader(b1); func() bool { id2, _, _ := avro.SplitHeader(b2); return id1 == id2 }() {
		t.Fatal("v1 and v2 have the same schema id")
	}
	_, v, err = old.Decode(ctx, b2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.(shipmentV1), (shipmentV1{OrderID: "o-2", Carrier: "UPS"}); got != want {
		t.Errorf("v1 reading v2 = %+v, want %+v", got, want)
	}
}

func TestDecodeBadInput(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	s := newOrdersSerde(t, reg)
	good, err := s.Encode(ctx, "orders", sampleOrder())
	if err != nil {
		t.Fatal(err)
	}
	unknownType, _ := reg.Register(ctx, "x-y.Z", `{"type":"record","name":"Z","namespace":"y","fields":[]}`)
	incompatible, _ := reg.Register(ctx, "orders-troupe.example.orders.OrderPlaced",
		`{"type":"record","name":"OrderPlaced","namespace":"troupe.example.orders","fields":[{"name":"orderId","type":"int"}]}`)

	for _, tc := range []struct {
		name   string
		value  []byte
		is     error
		id     int
		substr string
	}{
		{"empty", nil, avro.ErrBadMagic, -1, "0 bytes"},
		{"short", []byte{0, 0, 0}, avro.ErrBadMagic, -1, "3 bytes"},
		{"wrong magic", append([]byte{1}, good[1:]...), avro.ErrBadMagic, -1, "first byte is 0x01"},
		{"json instead of avro", []byte(`{"orderId":"o-1"}`), avro.ErrBadMagic, -1, "0x7b"},
		{"unknown schema id", []byte{0, 0, 0, 0x30, 0x39, 2, 'a'}, avro.ErrUnknownSchema, 12345, "12345"},
		{"truncated avro", good[:len(good)-3], nil, 1, "OrderPlaced"},
		{"header only", good[:5], nil, 1, "OrderPlaced"},
		{"unknown type", []byte{0, 0, 0, 0, byte(unknownType)}, avro.ErrUnknownType, unknownType, "y.Z"},
		{"incompatible writer", append([]byte{0, 0, 0, 0, byte(incompatible)}, 2), nil, incompatible, "cannot be read as the registered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, v, err := s.Decode(ctx, tc.value)
			if err == nil {
				t.Fatalf("decoded %+v", v)
			}
			var de *avro.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			if de.SchemaID != tc.id {
				t.Errorf("SchemaID = %d, want %d", de.SchemaID, tc.id)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not mention %q", err, tc.substr)
			}
			if _, _, err := s.DecodeJSON(ctx, tc.value); err == nil && tc.is != avro.ErrUnknownType && !strings.Contains(tc.name, "incompatible") {
				t.Errorf("DecodeJSON accepted it")
			}
		})
	}
}

func TestRegistryDownIsNotADecodeError(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	s := newOrdersSerde(t, reg)
	reg.down = true
	_, _, err := s.Decode(ctx, []byte{0, 0, 0, 0, 9, 0})
	var de *avro.DecodeError
	if !errors.Is(err, avro.ErrRegistryUnavailable) || errors.As(err, &de) {
		t.Fatalf("err = %v; want ErrRegistryUnavailable and no *DecodeError (it is worth a retry)", err)
	}
	if _, err := s.Encode(ctx, "orders", sampleOrder()); !errors.Is(err, avro.ErrRegistryUnavailable) {
		t.Fatalf("Encode err = %v", err)
	}
}

func TestAutoRegisterOff(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	s := newOrdersSerde(t, reg, avro.AutoRegister(false))
	_, err := s.Encode(ctx, "orders", sampleOrder())
	if !errors.Is(err, avro.ErrUnknownSchema) || !strings.Contains(err.Error(), "troupe schemas register") {
		t.Fatalf("err = %v; want ErrUnknownSchema saying how to register", err)
	}
	if reg.count("register") != 0 {
		t.Fatal("registered although auto-register is off")
	}
	// Registered ahead of time, it works.
	if _, err := newOrdersSerde(t, reg).Encode(ctx, "orders", sampleOrder()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Encode(ctx, "orders", sampleOrder()); err != nil {
		t.Fatal(err)
	}
}

func TestGenericType(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	typed := newOrdersSerde(t, reg)
	b, err := typed.Encode(ctx, "orders", orders.OutOfStock{OrderID: "o-9", SKU: "OOS-1"})
	if err != nil {
		t.Fatal(err)
	}
	generic := avro.NewSerde(reg)
	if err := generic.Register(nil, `{"type":"record","name":"OutOfStock","namespace":"troupe.example.orders","fields":[{"name":"orderId","type":"string"},{"name":"sku","type":"string"}]}`); err != nil {
		t.Fatal(err)
	}
	_, v, err := generic.Decode(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := v.(map[string]any); !ok || m["sku"] != "OOS-1" {
		t.Fatalf("generic decode = %#v", v)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	s := newOrdersSerde(t, newFakeRegistry())
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			var err error
			for i := 0; i < 200 && err == nil; i++ {
				var b []byte
				if b, err = s.Encode(ctx, "orders", sampleOrder()); err == nil {
					_, _, err = s.Decode(ctx, b)
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Decode returns values without copying them out of the allocation it
// decoded into; types stored directly in an interface word (a struct of one
// map) must still come back intact.
func TestDecodeValueShapes(t *testing.T) {
	type oneMap struct {
		M map[string]string `avro:"m"`
	}
	type oneString struct {
		S string `avro:"s"`
	}
	ctx := context.Background()
	s := avro.NewSerde(newFakeRegistry())
	if err := s.Register(oneMap{}, `{"type":"record","name":"OneMap","fields":[{"name":"m","type":{"type":"map","values":"string"}}]}`); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(oneString{}, `{"type":"record","name":"OneString","fields":[{"name":"s","type":"string"}]}`); err != nil {
		t.Fatal(err)
	}
	for _, in := range []any{oneMap{M: map[string]string{"k": "v"}}, oneString{S: "x"}} {
		b, err := s.Encode(ctx, "t", in)
		if err != nil {
			t.Fatal(err)
		}
		_, out, err := s.Decode(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, out) {
			t.Errorf("got %#v, want %#v", out, in)
		}
	}
}
