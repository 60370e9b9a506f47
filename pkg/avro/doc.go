// Package avro turns troupe events into Kafka record values and back: Avro
// binary in the Confluent wire format, with schemas kept in a schema registry
// (README: Concepts, Schemas).
//
// A value on the wire is
//
//	byte 0     0 (the magic byte)
//	bytes 1-4  the writer's schema id in the registry, big-endian
//	bytes 5-   the Avro binary encoding of the record
//
// A Serde maps Go types to Avro records. Register each event type once with
// its schema; Encode then finds (or registers) the schema id under the
// subject <topic>-<record full name> (TopicRecordNameStrategy, since one
// topic carries several event types) and writes the framed value. Decode
// reads the id, fetches the writer's schema from the registry, resolves it to
// the reader schema the Go type was registered with (Avro schema resolution:
// added fields take their defaults, removed ones are skipped), and returns a
// value of the registered Go type. Ids, writer schemas and resolved schemas
// are cached, so the registry sees one request per schema, not per record.
//
//	reg, _ := avro.NewRegistryClient("http://127.0.0.1:8081")
//	s := avro.NewSerde(reg)
//	err := s.Register(orders.OrderPlaced{}, orderPlacedAvsc) // or orders.Register(s)
//	value, err := s.Encode(ctx, "orders", orders.OrderPlaced{OrderID: "o-1", ...})
//	name, v, err := s.Decode(ctx, value) // v.(orders.OrderPlaced)
//
// See ExampleSerde.
//
// EncodeJSON and DecodeJSON do the same for JSON documents without any Go
// type, for the CLI's produce and tail.
//
// Errors a caller must tell apart: a *DecodeError (with ErrBadMagic,
// ErrUnknownSchema, ErrUnknownType or an Avro error inside) means the value
// itself cannot be read and retrying will not help; ErrRegistryUnavailable
// means the registry did not answer and a retry may.
package avro
