package avro

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	havro "github.com/hamba/avro/v2"
)

// EncodeJSON encodes the JSON object doc as the Avro record fullName, in the
// wire format, for topic. No Go type is needed. The schema is the one
// registered with Register under fullName (with its id found or registered
// as in Encode); otherwise the latest version of the subject
// <topic>-<fullName> in the registry.
//
// The JSON is plain, as a person would write it: a union takes the bare
// value (or Avro's {"type": value} form), a timestamp takes RFC 3339 or epoch
// milliseconds, bytes and fixed take base64, a decimal takes a number or a
// string. A field missing from doc takes its default. A document that does
// not fit the schema gives a *FieldError naming the field path and the
// expected type.
func (s *Serde) EncodeJSON(ctx context.Context, topic, fullName string, doc []byte) ([]byte, error) {
	plan, err := s.jsonPlan(ctx, topic, fullName)
	if err != nil {
		return nil, err
	}
	v, err := parseJSON(doc)
	if err != nil {
		return nil, err
	}
	return appendJSON(AppendHeader(make([]byte, 0, 256), plan.id), plan.schema, v, "")
}

func (s *Serde) jsonPlan(ctx context.Context, topic, fullName string) (*encodePlan, error) {
	s.mu.RLock()
	info := s.byName[fullName]
	plan := s.ids[subjectKey{topic, fullName}]
	s.mu.RUnlock()
	if info != nil {
		return s.encodePlan(ctx, topic, info)
	}
	if plan != nil {
		return plan, nil
	}
	subject := Subject(topic, fullName)
	id, text, err := s.reg.Latest(ctx, subject)
	if err != nil {
		if errors.Is(err, ErrUnknownSchema) {
			return nil, fmt.Errorf("no schema for %s on topic %s: subject %s is not in the registry (register the schemas under the topology's subjects first: troupe schemas register --dir schemas/ --topology topology/orders.yaml, or your topology file): %w",
				fullName, topic, subject, err)
		}
		return nil, err
	}
	sch, err := ParseSchema(text)
	if err != nil {
		return nil, fmt.Errorf("latest schema of %s (id %d) does not parse: %w", subject, id, err)
	}
	if named, ok := sch.(havro.NamedSchema); !ok || named.FullName() != fullName {
		return nil, fmt.Errorf("latest schema of subject %s (id %d) is not the record %s", subject, id, fullName)
	}
	plan = &encodePlan{id: id, schema: sch}
	s.mu.Lock()
	s.ids[subjectKey{topic, fullName}] = plan
	s.mu.Unlock()
	return plan, nil
}

// DecodeJSON decodes a wire-format value into a JSON object with the
// writer's own schema: no Go type is needed, and every field the producer
// wrote is shown, in schema order. Unions are shown as their bare value,
// timestamps as RFC 3339, bytes and fixed as base64, decimals as strings,
// so that the output is valid input for EncodeJSON.
func (s *Serde) DecodeJSON(ctx context.Context, value []byte) (fullName string, doc []byte, err error) {
	id, payload, err := SplitHeader(value)
	if err != nil {
		return "", nil, &DecodeError{SchemaID: -1, Err: err}
	}
	plan, err := s.readPlan(ctx, id)
	if err != nil {
		return "", nil, err
	}
	r := binReader{b: payload, maxBytes: s.maxBytes, maxItems: s.maxItems}
	out, err := r.toJSON(make([]byte, 0, 2*len(payload)+64), plan.writer, "", 0)
	if err != nil {
		return plan.fullName, nil, &DecodeError{SchemaID: id, Type: plan.fullName, Err: err}
	}
	return plan.fullName, out, nil
}

// parseJSON reads one JSON value, keeping numbers exact.
func parseJSON(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &FieldError{Problem: "not valid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &FieldError{Problem: "not valid JSON: more than one value"}
	}
	return v, nil
}
