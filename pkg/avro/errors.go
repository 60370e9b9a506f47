package avro

import (
	"errors"
	"fmt"
)

var (
	// ErrBadMagic means a value is not in the Confluent wire format: it is
	// shorter than the five header bytes or its first byte is not 0.
	ErrBadMagic = errors.New("not Confluent wire format (magic byte 0 and 4-byte schema id expected)")

	// ErrUnknownSchema means the registry has no schema with the id (when
	// decoding) or under the subject (when encoding without auto-register).
	ErrUnknownSchema = errors.New("schema not found in the registry")

	// ErrUnknownType means the value's writer schema names an Avro record
	// that no Go type was registered for with Register.
	ErrUnknownType = errors.New("avro type not registered with the serde")

	// ErrRegistryUnavailable means the schema registry could not be reached or
	// failed; unlike the errors above, retrying later may succeed.
	ErrRegistryUnavailable = errors.New("schema registry unavailable")

	// ErrRegistryAuth means the schema registry refused the request's
	// credentials (401: none or a wrong token; 403: a read-only token for a
	// write). Retrying does not help; the setting does.
	ErrRegistryAuth = errors.New("schema registry refused the credentials")
)

// DecodeError is returned by Decode and DecodeJSON when a value cannot be
// decoded. It always means the value itself is bad for this reader: a record
// that fails with a DecodeError fails again on retry.
type DecodeError struct {
	// SchemaID is the writer's schema id from the header, or -1 when the
	// header could not be read.
	SchemaID int
	// Type is the writer schema's full name, when known.
	Type string
	// Err is the cause: ErrBadMagic, ErrUnknownSchema, ErrUnknownType, an
	// Avro decoding error, or a schema resolution error.
	Err error
}

func (e *DecodeError) Error() string {
	switch {
	case e.SchemaID < 0:
		return fmt.Sprintf("decode avro value: %v", e.Err)
	case e.Type == "":
		return fmt.Sprintf("decode avro value with schema id %d: %v", e.SchemaID, e.Err)
	default:
		return fmt.Sprintf("decode avro value %s (schema id %d): %v", e.Type, e.SchemaID, e.Err)
	}
}

func (e *DecodeError) Unwrap() error { return e.Err }

// FieldError says which part of a JSON document does not fit the Avro
// schema, and what the schema expects there.
type FieldError struct {
	// Path is the field's path in the document: shipTo.country, items[2].sku.
	// Empty for the document itself.
	Path string
	// Expected describes what the schema wants: "long (timestamp-millis:
	// RFC 3339 or epoch millis)", "one of [null, string]".
	Expected string
	// Problem says what was found instead.
	Problem string
}

func (e *FieldError) Error() string {
	where := "field " + e.Path
	if e.Path == "" {
		where = "document"
	}
	if e.Expected == "" {
		return fmt.Sprintf("%s: %s", where, e.Problem)
	}
	return fmt.Sprintf("%s: expected %s, %s", where, e.Expected, e.Problem)
}
