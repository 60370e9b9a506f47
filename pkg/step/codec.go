package step

import "context"

// Codec turns events into record values and back. *avro.Serde implements it:
// Avro in the Confluent wire format, schemas in the registry (README: Concepts).
type Codec interface {
	// TypeName returns the full name (the ce_type) of the Go value's type.
	TypeName(v any) (string, error)
	// Encode encodes v for topic.
	Encode(ctx context.Context, topic string, v any) ([]byte, error)
	// Decode decodes a value into the Go type registered for its schema,
	// returning the type's full name and a value (not a pointer) of it.
	Decode(ctx context.Context, value []byte) (fullName string, v any, err error)
}
