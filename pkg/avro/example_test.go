package avro_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/troupehq/troupe/pkg/avro"
)

// OrderShipped is a Go type for the Avro record in shippedSchema.
type OrderShipped struct {
	OrderID   string    `avro:"orderId"`
	Carrier   string    `avro:"carrier"`
	ShippedAt time.Time `avro:"shippedAt"`
}

const shippedSchema = `{"type":"record","name":"OrderShipped","namespace":"example","fields":[
	{"name":"orderId","type":"string"},
	{"name":"carrier","type":"string","default":"post"},
	{"name":"shippedAt","type":{"type":"long","logicalType":"timestamp-millis"}}]}`

func ExampleSerde() {
	fake := srfake.New() // stands in for any Confluent-compatible registry
	defer fake.Close()
	reg, err := avro.NewRegistryClient(fake.URL())
	if err != nil {
		panic(err)
	}
	s := avro.NewSerde(reg)
	if err := s.Register(OrderShipped{}, shippedSchema); err != nil {
		panic(err)
	}
	ctx := context.Background()

	// Encode registers the schema under "shipping-example.OrderShipped" the
	// first time, then uses the cached id.
	value, err := s.Encode(ctx, "shipping", OrderShipped{OrderID: "o-1", Carrier: "DHL", ShippedAt: time.UnixMilli(1714564800000).UTC()})
	if err != nil {
		panic(err)
	}
	fmt.Printf("magic %d, schema id %d\n", value[0], value[4])

	name, v, err := s.Decode(ctx, value)
	if err != nil {
		panic(err)
	}
	fmt.Println(name, v.(OrderShipped).Carrier, v.(OrderShipped).ShippedAt.Format(time.RFC3339))

	// JSON, as the CLI's produce and tail do it: no Go type involved.
	value, err = s.EncodeJSON(ctx, "shipping", "example.OrderShipped", []byte(`{"orderId":"o-2","shippedAt":"2024-05-01T12:00:00Z"}`))
	if err != nil {
		panic(err)
	}
	_, doc, _ := s.DecodeJSON(ctx, value)
	fmt.Println(string(doc))

	_, err = s.EncodeJSON(ctx, "shipping", "example.OrderShipped", []byte(`{"orderId":"o-3","shippedAt":"noon"}`))
	fmt.Println(err)

	_, _, err = s.Decode(ctx, []byte(`{"orderId":"o-4"}`))
	fmt.Println(errors.Is(err, avro.ErrBadMagic))
	// Output:
	// magic 0, schema id 1
	// example.OrderShipped DHL 2024-05-01T12:00:00Z
	// {"orderId":"o-2","carrier":"post","shippedAt":"2024-05-01T12:00:00Z"}
	// field shippedAt: expected long timestamp-millis (RFC 3339 time or epoch milliseconds), got "noon", which is not an RFC 3339 time like 2024-05-01T12:00:00Z
	// true
}
