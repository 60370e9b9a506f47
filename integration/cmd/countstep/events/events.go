// Package events holds the events of the countstep test binary and a Serde
// for them whose schema ids are fixed, so that the binary and the test
// process agree without a schema registry.
package events

import (
	"context"
	"fmt"

	"github.com/troupehq/troupe/pkg/avro"
)

// Tick is one input. Seq is unique per input; TimerMs > 0 asks the step to
// answer after that many milliseconds (a durable timer) instead of at once.
type Tick struct {
	Seq     int64 `avro:"seq"`
	TimerMs int64 `avro:"timerMs"`
}

// Counted answers a Tick: the instance's count after it.
type Counted struct {
	Seq   int64 `avro:"seq"`
	Count int64 `avro:"count"`
	Timer bool  `avro:"timer"`
}

// Full names (ce_type) of the events.
const (
	TickType    = "troupe.it.Tick"
	CountedType = "troupe.it.Counted"
)

var schemas = map[int]string{
	1: `{"type":"record","name":"Tick","namespace":"troupe.it","fields":[{"name":"seq","type":"long"},{"name":"timerMs","type":"long"}]}`,
	2: `{"type":"record","name":"Counted","namespace":"troupe.it","fields":[{"name":"seq","type":"long"},{"name":"count","type":"long"},{"name":"timer","type":"boolean"}]}`,
}

// NewSerde returns a Serde for Tick and Counted with fixed schema ids.
func NewSerde() (*avro.Serde, error) {
	s := avro.NewSerde(fixedRegistry{}, avro.AutoRegister(false))
	if err := s.Register(Tick{}, schemas[1]); err != nil {
		return nil, err
	}
	if err := s.Register(Counted{}, schemas[2]); err != nil {
		return nil, err
	}
	return s, nil
}

// fixedRegistry knows the two schemas under every subject.
type fixedRegistry struct{}

func (fixedRegistry) id(schema string) (int, error) {
	for id, s := range schemas {
		if s == schema {
			return id, nil
		}
	}
	return 0, fmt.Errorf("schema %s: %w", schema, avro.ErrUnknownSchema)
}

func (r fixedRegistry) Register(_ context.Context, _, schema string) (int, error) {
	return r.id(schema)
}
func (r fixedRegistry) Lookup(_ context.Context, _, schema string) (int, error) { return r.id(schema) }

func (fixedRegistry) SchemaByID(_ context.Context, id int) (string, error) {
	if s, ok := schemas[id]; ok {
		return s, nil
	}
	return "", fmt.Errorf("schema id %d: %w", id, avro.ErrUnknownSchema)
}

func (fixedRegistry) Latest(context.Context, string) (int, string, error) {
	return 0, "", avro.ErrUnknownSchema
}
