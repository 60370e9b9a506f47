package orders_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/schemas"
)

var (
	placedAt = time.Date(2024, 5, 1, 12, 30, 45, 123e6, time.UTC)
	addr     = orders.Address{Name: "Ada Lovelace", Line1: "12 St James's Square", City: "London", Country: "GB"}
	items    = []orders.LineItem{{SKU: "BOOK-1", Quantity: 2}, {SKU: "OOS-7", Quantity: 1}}
)

// samples has one event of every type, every field set, so that a field the
// schema does not carry would come back zero and fail the round trip.
var samples = []any{
	orders.OrderPlaced{OrderID: "o-1", CustomerID: "c-1", AmountCents: 12999, Currency: "EUR", Items: items, ShipTo: addr, PlacedAt: placedAt},
	orders.PaymentAuthorized{OrderID: "o-1", PaymentID: "p-1", AmountCents: 12999, Items: items, ShipTo: addr},
	orders.PaymentDeclined{OrderID: "o-1", Reason: "amount over limit"},
	orders.RefundPayment{OrderID: "o-1", Reason: "troupe.example.orders.OutOfStock"},
	orders.PaymentRefunded{OrderID: "o-1", PaymentID: "p-1"},
	orders.InventoryReserved{OrderID: "o-1", ReservationID: "r-1", ShipTo: addr},
	orders.OutOfStock{OrderID: "o-1", SKU: "OOS-7"},
	orders.ReleaseInventory{OrderID: "o-1", Reason: "timeout"},
	orders.InventoryReleased{OrderID: "o-1", ReservationID: "r-1"},
	orders.ShipmentScheduled{OrderID: "o-1", TrackingID: "t-1"},
	orders.ShipmentFailed{OrderID: "o-1", Reason: "country XX"},
	saga.Ended{SagaID: "o-1", Saga: "order-fulfillment", Status: "COMPENSATED", Reason: "timeout", EndedAt: placedAt},
}

func TestRoundTripEveryEvent(t *testing.T) {
	ctx := context.Background()
	fake := srfake.New()
	defer fake.Close()
	reg, err := avro.NewRegistryClient(fake.URL())
	if err != nil {
		t.Fatal(err)
	}
	s := avro.NewSerde(reg)
	if err := orders.Register(s); err != nil {
		t.Fatal(err)
	}

	covered := map[string]bool{}
	for _, in := range samples {
		name, err := s.TypeName(in)
		if err != nil {
			t.Fatal(err)
		}
		covered[name] = true
		assertAllFieldsSet(t, name, reflect.ValueOf(in))
		value, err := s.Encode(ctx, "orders", in)
		if err != nil {
			t.Fatalf("encode %s: %v", name, err)
		}
		gotName, out, err := s.Decode(ctx, value)
		if err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		if gotName != name || !reflect.DeepEqual(in, out) {
			t.Errorf("%s round trip:\n in %+v\nout %s %+v", name, in, gotName, out)
		}
		// And through JSON, as the CLI does it.
		_, doc, err := s.DecodeJSON(ctx, value)
		if err != nil {
			t.Fatalf("%s to JSON: %v", name, err)
		}
		again, err := s.EncodeJSON(ctx, "orders", name, doc)
		if err != nil {
			t.Fatalf("%s from JSON %s: %v", name, doc, err)
		}
		if _, out, err := s.Decode(ctx, again); err != nil || !reflect.DeepEqual(in, out) {
			t.Errorf("%s through JSON %s: %+v, %v", name, doc, out, err)
		}
	}
	for name := range orders.Types() {
		if !covered[name] {
			t.Errorf("no sample of %s", name)
		}
	}
}

// TestSchemasAndTypesMatch checks the .avsc files against the Go types:
// same set of records, and Register (which encodes and decodes a zero
// value) accepts each pair.
func TestSchemasAndTypesMatch(t *testing.T) {
	files, err := schemas.All()
	if err != nil {
		t.Fatal(err)
	}
	types := orders.Types()
	if len(files) != len(types) {
		t.Errorf("%d schema files, %d Go types", len(files), len(types))
	}
	for _, f := range files {
		if _, ok := types[f.FullName]; !ok {
			t.Errorf("%s (%s) has no Go type", f.FullName, f.Path)
		}
	}
}

// Compensation commands and compensated events must be buildable from the
// saga id alone (the coordinator and the runtime's null compensation know
// nothing else): every field but the key has a default.
func TestCompensationEventsNeedOnlyTheKey(t *testing.T) {
	ctx := context.Background()
	fake := srfake.New()
	defer fake.Close()
	reg, _ := avro.NewRegistryClient(fake.URL())
	s := avro.NewSerde(reg)
	if err := orders.Register(s); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"RefundPayment", "PaymentRefunded", "ReleaseInventory", "InventoryReleased"} {
		if _, err := s.EncodeJSON(ctx, "orders", orders.Namespace+"."+name, []byte(`{"orderId":"o-1"}`)); err != nil {
			t.Errorf("%s from the key alone: %v", name, err)
		}
	}
}

func assertAllFieldsSet(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("sample %s leaves %s zero", name, v.Type().Field(i).Name)
		}
	}
}

func ExampleRegister() {
	fake := srfake.New() // any Confluent-compatible registry
	defer fake.Close()
	reg, _ := avro.NewRegistryClient(fake.URL())
	s := avro.NewSerde(reg)
	if err := orders.Register(s); err != nil {
		panic(err)
	}

	ctx := context.Background()
	value, err := s.Encode(ctx, "inventory", orders.OutOfStock{OrderID: "o-7", SKU: "OOS-1"})
	if err != nil {
		panic(err)
	}
	name, v, err := s.Decode(ctx, value)
	if err != nil {
		panic(err)
	}
	fmt.Println(name, v.(orders.OutOfStock).SKU)
	_, doc, _ := s.DecodeJSON(ctx, value)
	fmt.Println(string(doc))
	// Output:
	// troupe.example.orders.OutOfStock OOS-1
	// {"orderId":"o-7","sku":"OOS-1"}
}
