package avro_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
)

// kitchenSink uses every Avro type the JSON conversion handles.
const kitchenSink = `{"type":"record","name":"Sink","namespace":"test","fields":[
	{"name":"id","type":"string"},
	{"name":"n","type":"int"},
	{"name":"big","type":"long"},
	{"name":"ratio","type":"double"},
	{"name":"f","type":"float"},
	{"name":"ok","type":"boolean"},
	{"name":"raw","type":"bytes"},
	{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"atMicros","type":{"type":"long","logicalType":"timestamp-micros"}},
	{"name":"day","type":{"type":"int","logicalType":"date"}},
	{"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
	{"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
	{"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
	{"name":"tags","type":{"type":"array","items":"string"}},
	{"name":"attrs","type":{"type":"map","values":"long"}},
	{"name":"note","type":["null","string"],"default":null},
	{"name":"either","type":["int","string"]},
	{"name":"inner","type":{"type":"record","name":"Inner","fields":[
		{"name":"x","type":"int"},
		{"name":"when","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null}]}},
	{"name":"maybeInner","type":["null","Inner"],"default":null},
	{"name":"withDefault","type":"string","default":"dflt"},
	{"name":"countDefault","type":"long","default":7}
]}`

func newSinkSerde(t testing.TB) (*avro.Serde, *fakeRegistry) {
	t.Helper()
	reg := newFakeRegistry()
	s := avro.NewSerde(reg)
	if err := s.Register(nil, kitchenSink); err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func TestJSONRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := newSinkSerde(t)
	in := `{"id":"s-1","n":-5,"big":9007199254740993,"ratio":0.25,"f":1.5,"ok":true,"raw":"AAEC",
		"at":"2024-05-01T12:30:45.123Z","atMicros":1714566645123456,"day":"2024-05-01","price":"-123.45",
		"color":"GREEN","hash":"3q2+7w==","tags":["a","b"],"attrs":{"x":1,"y":-2},"note":"hi",
		"either":{"string":"wrapped"},"inner":{"x":3,"when":1714566645000},"maybeInner":{"x":4}}`
	value, err := s.EncodeJSON(ctx, "sinks", "test.Sink", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	name, out, err := s.DecodeJSON(ctx, value)
	if err != nil {
		t.Fatal(err)
	}
	if name != "test.Sink" {
		t.Fatalf("name = %s", name)
	}
	want := `{"id":"s-1","n":-5,"big":9007199254740993,"ratio":0.25,"f":1.5,"ok":true,"raw":"AAEC",` +
		`"at":"2024-05-01T12:30:45.123Z","atMicros":"2024-05-01T12:30:45.123456Z","day":"2024-05-01","price":"-123.45",` +
		`"color":"GREEN","hash":"3q2+7w==","tags":["a","b"],"attrs":{"x":1,"y":-2},"note":"hi",` +
		`"either":"wrapped","inner":{"x":3,"when":"2024-05-01T12:30:45Z"},"maybeInner":{"x":4,"when":null},` +
		`"withDefault":"dflt","countDefault":7}`
	if string(out) != want {
		t.Fatalf("DecodeJSON:\n got %s\nwant %s", out, want)
	}
	// The output is valid input, and encodes to the same bytes.
	again, err := s.EncodeJSON(ctx, "sinks", "test.Sink", out)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(value) {
		t.Fatal("JSON -> Avro -> JSON -> Avro changed the bytes")
	}
	if !json.Valid(out) {
		t.Fatal("invalid JSON")
	}
}

// JSON of an example event decodes into its Go type: the hand-written Avro
// binary matches hamba's.
func TestJSONMatchesGoTypes(t *testing.T) {
	ctx := context.Background()
	s := newOrdersSerde(t, newFakeRegistry())
	doc := `{"orderId":"o-1001","customerId":"c-42","amountCents":12999,"currency":"EUR",
		"items":[{"sku":"BOOK-1","quantity":2},{"sku":"PEN-7","quantity":1}],
		"shipTo":{"name":"Ada Lovelace","line1":"12 St James's Square","city":"London","country":"GB"},
		"placedAt":"2024-05-01T14:30:45.123+02:00"}`
	value, err := s.EncodeJSON(ctx, "orders", "troupe.example.orders.OrderPlaced", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, v, err := s.Decode(ctx, value)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.(orders.OrderPlaced), sampleOrder(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// And the other way: hamba's bytes (with block sizes in arrays) read as JSON.
	typed, err := s.Encode(ctx, "orders", sampleOrder())
	if err != nil {
		t.Fatal(err)
	}
	_, fromTyped, err := s.DecodeJSON(ctx, typed)
	if err != nil {
		t.Fatal(err)
	}
	_, fromJSON, _ := s.DecodeJSON(ctx, value)
	if string(fromTyped) != string(fromJSON) {
		t.Fatalf("Encode and EncodeJSON differ:\n%s\n%s", fromTyped, fromJSON)
	}
	// Epoch millis work as well as RFC 3339.
	epoch := strings.Replace(doc, `"2024-05-01T14:30:45.123+02:00"`, "1714566645123", 1)
	if value2, err := s.EncodeJSON(ctx, "orders", "troupe.example.orders.OrderPlaced", []byte(epoch)); err != nil || string(value2) != string(value) {
		t.Fatalf("epoch millis: %v", err)
	}
}

func TestJSONDoesNotFit(t *testing.T) {
	ctx := context.Background()
	s := newOrdersSerde(t, newFakeRegistry())
	base := map[string]any{
		"orderId": "o-1", "customerId": "c-1", "amountCents": 100, "currency": "EUR",
		"items":    []any{map[string]any{"sku": "A", "quantity": 1}},
		"shipTo":   map[string]any{"name": "n", "line1": "l", "city": "c", "country": "GB"},
		"placedAt": "2024-05-01T12:00:00Z",
	}
	for _, tc := range []struct {
		name   string
		edit   func(m map[string]any)
		raw    string
		path   string
		substr string
	}{
		{name: "string for long", edit: func(m map[string]any) { m["amountCents"] = "100" },
			path: "amountCents", substr: `expected long (64-bit integer), got string "100"`},
		{name: "fraction for long", edit: func(m map[string]any) { m["amountCents"] = 1.5 },
			path: "amountCents", substr: "got number 1.5"},
		{name: "nested type", edit: func(m map[string]any) { m["items"].([]any)[0].(map[string]any)["quantity"] = "two" },
			path: "items[0].quantity", substr: `expected int (32-bit integer), got string "two"`},
		{name: "int overflow", edit: func(m map[string]any) { m["items"].([]any)[0].(map[string]any)["quantity"] = 1 << 40 },
			path: "items[0].quantity", substr: "out of range"},
		{name: "missing field", edit: func(m map[string]any) { delete(m["shipTo"].(map[string]any), "country") },
			path: "shipTo.country", substr: "missing and has no default"},
		{name: "unknown field", edit: func(m map[string]any) { m["shipTo"].(map[string]any)["zip"] = "123" },
			path: "shipTo.zip", substr: "not a field of record troupe.example.orders.Address (its fields: name, line1, city, country)"},
		{name: "bad time", edit: func(m map[string]any) { m["placedAt"] = "yesterday" },
			path: "placedAt", substr: `expected long timestamp-millis (RFC 3339 time or epoch milliseconds), got "yesterday"`},
		{name: "object for array", edit: func(m map[string]any) { m["items"] = map[string]any{} },
			path: "items", substr: "expected array of troupe.example.orders.LineItem, got an object"},
		{name: "null for record", edit: func(m map[string]any) { m["shipTo"] = nil },
			path: "shipTo", substr: "expected record troupe.example.orders.Address (a JSON object), got null"},
		{name: "not JSON", raw: `{"orderId":`, path: "", substr: "not valid JSON"},
		{name: "array document", raw: `[1]`, path: "", substr: "got an array"},
		{name: "two documents", raw: `{} {}`, path: "", substr: "more than one value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := []byte(tc.raw)
			if tc.edit != nil {
				m := deepCopy(base).(map[string]any)
				tc.edit(m)
				doc, _ = json.Marshal(m)
			}
			_, err := s.EncodeJSON(ctx, "orders", "troupe.example.orders.OrderPlaced", doc)
			var fe *avro.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FieldError", err)
			}
			if fe.Path != tc.path || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("err = %q (path %q); want path %q and %q", err, fe.Path, tc.path, tc.substr)
			}
		})
	}
}

func TestJSONUnionsAndDefaults(t *testing.T) {
	ctx := context.Background()
	s, _ := newSinkSerde(t)
	base := `{"id":"s","n":1,"big":2,"ratio":3,"f":4,"ok":false,"raw":"","at":0,"atMicros":0,"day":0,"price":0,
		"color":"RED","hash":"AAAAAA==","tags":[],"attrs":{},"inner":{"x":1}`
	for _, tc := range []struct {
		extra, want, err string
	}{
		{extra: `,"either":5}`, want: `"either":5`},
		{extra: `,"either":"five"}`, want: `"either":"five"`},
		{extra: `,"either":{"int":6}}`, want: `"either":6`},
		{extra: `,"either":true}`, err: "field either: expected one of [int, string], got true"},
		{extra: `,"either":1,"note":null}`, want: `"note":null`},
		{extra: `,"either":1,"note":{"string":"x"}}`, want: `"note":"x"`},
		{extra: `,"either":1,"maybeInner":{"test.Inner":{"x":9}}}`, want: `"maybeInner":{"x":9,"when":null}`},
		{extra: `,"either":1,"maybeInner":{"x":"nine"}}`, err: `field maybeInner.x: expected int (32-bit integer), got string "nine"`},
		{extra: `,"either":1,"color":"BLUE"}`, err: "field color: expected enum test.Color, one of [RED GREEN], got string \"BLUE\""},
		{extra: `,"either":1,"hash":"AAA="}`, err: "field hash: expected fixed test.Hash (4 bytes, base64), got 2 bytes"},
		{extra: `,"either":1,"price":"1.234"}`, err: "more than 2 decimal places"},
		{extra: `,"either":1}`, want: `"withDefault":"dflt","countDefault":7`},
	} {
		doc := base + tc.extra
		value, err := s.EncodeJSON(ctx, "sinks", "test.Sink", []byte(doc))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.extra, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.extra, err)
			continue
		}
		_, out, err := s.DecodeJSON(ctx, value)
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: got %s (%v), want it to contain %s", tc.extra, out, err, tc.want)
		}
	}
}

func TestEncodeJSONUsesTheRegistrysLatest(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry()
	// Registered by someone else; this serde has no Go type and no schema.
	if _, err := newOrdersSerde(t, reg).Encode(ctx, "stock", orders.OutOfStock{OrderID: "x", SKU: "y"}); err != nil {
		t.Fatal(err)
	}
	s := avro.NewSerde(reg)
	value, err := s.EncodeJSON(ctx, "stock", "troupe.example.orders.OutOfStock", []byte(`{"orderId":"o-5","sku":"OOS-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, out, err := s.DecodeJSON(ctx, value)
	if err != nil || string(out) != `{"orderId":"o-5","sku":"OOS-1"}` {
		t.Fatalf("got %s, %v", out, err)
	}
	_, err = s.EncodeJSON(ctx, "elsewhere", "troupe.example.orders.OutOfStock", []byte(`{}`))
	if !errors.Is(err, avro.ErrUnknownSchema) || !strings.Contains(err.Error(), "troupe schemas register") {
		t.Fatalf("unregistered subject: %v", err)
	}
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = deepCopy(e)
		}
		return a
	}
	return v
}
