package avro_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	havro "github.com/hamba/avro/v2"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
)

// TestDecodeWithReferences: a value written with a schema that references
// a type of another subject (as a Java or Python producer registers it)
// decodes, the referenced types fetched from the registry (the built-in
// one, on kfake) and inlined.
func TestDecodeWithReferences(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	srv, err := registry.New(registry.Config{Kafka: kafka.Config{Brokers: cluster.ListenAddrs()}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("registry stopped: %v", err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	const (
		address  = `{"type":"record","name":"Address","namespace":"t","fields":[{"name":"city","type":"string"}]}`
		customer = `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"home","type":"t.Address"}]}`
		order    = `{"type":"record","name":"Order","namespace":"t","fields":[{"name":"orderId","type":"string"},{"name":"customer","type":"t.Customer"},{"name":"shipTo","type":"t.Address"}]}`
	)
	c, err := avro.NewRegistryClient(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(subject, schema string, refs ...sr.SchemaReference) int {
		t.Helper()
		id, err := c.SR().RegisterSchema(ctx, subject, sr.Schema{Schema: schema, References: refs}, -1, -1)
		if err != nil {
			t.Fatalf("register %s: %v", subject, err)
		}
		return id
	}
	reg("address", address)
	reg("customer", customer, sr.SchemaReference{Name: "t.Address", Subject: "address", Version: 1})
	id := reg("orders-t.Order", order,
		sr.SchemaReference{Name: "t.Customer", Subject: "customer", Version: 1},
		sr.SchemaReference{Name: "t.Address", Subject: "address", Version: 1})

	// The producer's side: the schema with its types, and the wire format.
	cache := &havro.SchemaCache{}
	for _, s := range []string{address, customer} {
		if _, err := havro.ParseWithCache(s, "", cache); err != nil {
			t.Fatal(err)
		}
	}
	writer, err := havro.ParseWithCache(order, "", cache)
	if err != nil {
		t.Fatal(err)
	}
	type addr struct {
		City string `avro:"city"`
	}
	payload, err := havro.Marshal(writer, struct {
		OrderID  string `avro:"orderId"`
		Customer struct {
			ID   string `avro:"id"`
			Home addr   `avro:"home"`
		} `avro:"customer"`
		ShipTo addr `avro:"shipTo"`
	}{OrderID: "o-1", Customer: struct {
		ID   string `avro:"id"`
		Home addr   `avro:"home"`
	}{"c-1", addr{"Utrecht"}}, ShipTo: addr{"Leiden"}})
	if err != nil {
		t.Fatal(err)
	}

	name, doc, err := avro.NewSerde(c).DecodeJSON(ctx, append(avro.AppendHeader(nil, id), payload...))
	want := `{"orderId":"o-1","customer":{"id":"c-1","home":{"city":"Utrecht"}},"shipTo":{"city":"Leiden"}}`
	if err != nil || name != "t.Order" || string(doc) != want {
		t.Fatalf("decode = %s %s, %v; want t.Order %s", name, doc, err, want)
	}
}
