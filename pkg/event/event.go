// Package event holds the metadata every troupe event carries in its Kafka
// headers: the CloudEvents Kafka binding in binary mode (DESIGN §3), plus
// W3C traceparent passed through.
//
// The record key is the saga instance id; the value is Avro in the Confluent
// wire format (see package avro). Headers carry everything else:
//
//	ce_specversion=1.0  ce_id=<UUIDv7>  ce_source=<step or client>
//	ce_type=<Avro full name>  ce_time=<RFC 3339>  content-type=application/avro
//	ce_sagaid  ce_causationid  ce_correlationid  traceparent
package event

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names of the CloudEvents Kafka binding and its troupe extensions.
const (
	HeaderSpecVersion   = "ce_specversion"
	HeaderID            = "ce_id"
	HeaderSource        = "ce_source"
	HeaderType          = "ce_type"
	HeaderTime          = "ce_time"
	HeaderContentType   = "content-type"
	HeaderSagaID        = "ce_sagaid"
	HeaderCausationID   = "ce_causationid"
	HeaderCorrelationID = "ce_correlationid"
	HeaderTraceParent   = "traceparent"

	SpecVersion     = "1.0"
	ContentTypeAvro = "application/avro"
)

// Metadata is what the headers of one event say about it.
type Metadata struct {
	ID            string    // unique event id (UUIDv7); dedupe key
	Source        string    // producing step or client
	Type          string    // Avro record full name
	Time          time.Time // when the event was produced
	SagaID        string    // saga instance id (also the record key)
	CausationID   string    // ce_id of the event that caused this one
	CorrelationID string    // shared by every event of one saga instance
	TraceParent   string    // W3C trace context, passed through untouched
}

// ErrNoID means a record has no ce_id header: it was not produced by a
// CloudEvents-aware client, and cannot be deduplicated.
var ErrNoID = errors.New("event has no ce_id header")

// NewID returns a new event id: a UUIDv7, time-ordered and unique.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only if the system's random source fails.
		panic(fmt.Sprintf("event: generate UUIDv7: %v", err))
	}
	return id.String()
}

// New returns metadata for a fresh event of the given type from source,
// with a new id and the current time.
func New(typ, source, sagaID string) Metadata {
	return Metadata{ID: NewID(), Source: source, Type: typ, Time: time.Now().UTC(), SagaID: sagaID, CorrelationID: sagaID}
}

// CausedBy returns metadata for a new event of type typ from source, caused
// by parent: it keeps the saga, correlation and trace of the parent.
func CausedBy(parent Metadata, typ, source string) Metadata {
	m := New(typ, source, parent.SagaID)
	m.CausationID = parent.ID
	if parent.CorrelationID != "" {
		m.CorrelationID = parent.CorrelationID
	}
	m.TraceParent = parent.TraceParent
	return m
}

// Headers renders m as Kafka record headers. Empty optional fields are left out.
func (m Metadata) Headers() []kgo.RecordHeader {
	h := make([]kgo.RecordHeader, 0, 10)
	add := func(k, v string) {
		if v != "" {
			h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	add(HeaderSpecVersion, SpecVersion)
	add(HeaderID, m.ID)
	add(HeaderSource, m.Source)
	add(HeaderType, m.Type)
	if !m.Time.IsZero() {
		add(HeaderTime, m.Time.UTC().Format(time.RFC3339Nano))
	}
	add(HeaderContentType, ContentTypeAvro)
	add(HeaderSagaID, m.SagaID)
	add(HeaderCausationID, m.CausationID)
	add(HeaderCorrelationID, m.CorrelationID)
	add(HeaderTraceParent, m.TraceParent)
	return h
}

// FromRecord reads the metadata of r. Missing headers leave fields empty; the
// saga id falls back to the record key. A malformed ce_time is an error.
func FromRecord(r *kgo.Record) (Metadata, error) {
	var m Metadata
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderID:
			m.ID = v
		case HeaderSource:
			m.Source = v
		case HeaderType:
			m.Type = v
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return m, fmt.Errorf("header %s=%q is not RFC 3339: %w", HeaderTime, v, err)
			}
			m.Time = t
		case HeaderSagaID:
			m.SagaID = v
		case HeaderCausationID:
			m.CausationID = v
		case HeaderCorrelationID:
			m.CorrelationID = v
		case HeaderTraceParent:
			m.TraceParent = v
		}
	}
	if m.SagaID == "" {
		m.SagaID = string(r.Key)
	}
	return m, nil
}

// Header returns the value of the first header named key in r, and whether
// it was there.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
