// Package event holds the metadata every troupe event carries in its Kafka
// headers: the CloudEvents Kafka binding in binary mode (README: Concepts), plus
// W3C traceparent passed through.
//
// The record key is the saga instance id; the value is Avro in the Confluent
// wire format (see package avro). Headers carry everything else:
//
//	ce_specversion=1.0  ce_id=<UUIDv7>  ce_source=<step or client>
//	ce_type=<Avro full name>  ce_time=<RFC 3339>  content-type=application/avro
//	ce_sagaid  ce_causationid  ce_correlationid  traceparent
//
// It is liberal in what it accepts from other producers and exact in what it
// emits. FromRecord takes ce_time as RFC 3339 with or without a zone (none
// means UTC), with a space for the T, or as epoch milliseconds; a record
// without ce_id gets an id derived from its place in Kafka (DerivedID), so
// that a redelivery of it is still recognised; a record without ce_type
// leaves Type empty for the consumer to learn from the Avro schema. Headers
// always writes ce_time as RFC 3339 in UTC.
package event

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	// HeaderTimer names the step timer that emitted the event (set with
	// After, At or SetTimer); absent when a handler emitted it for its
	// input. The saga history notes it, and the UI's timeline draws the
	// wait.
	HeaderTimer = "troupe_timer"

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
	Timer         string    // the step timer that emitted it (HeaderTimer); empty: a handler did
	// IDDerived says the record had no ce_id: ID is DerivedID of its place,
	// which dedupes a redelivery of the record but not a producer's retry
	// (a second record). Consumers count such events.
	IDDerived bool
}

// ErrNoID means a record has no ce_id header: it was not produced by a
// CloudEvents-aware client. FromRecord does not return it (it derives an id
// and sets Metadata.IDDerived); it is for callers that require one.
var ErrNoID = errors.New("event has no ce_id header")

// DerivedID is the id of an event that arrived without ce_id: its topic,
// partition and offset, as "topic/partition@offset" (the place a dead letter
// names). The same record read twice gets the same id, so the dedupe set
// still drops a redelivery.
func DerivedID(topic string, partition int32, offset int64) string {
	return topic + "/" + strconv.FormatInt(int64(partition), 10) + "@" + strconv.FormatInt(offset, 10)
}

// Headers of package dlq that name the place a record copies: a replay's
// (the dead letter it was replayed from) and a dead letter's (where the
// failed record was consumed). An id-less record that carries them gets the
// id derived from that place, not its own: two replays of one dead letter
// are then one event to the dedupe set.
const (
	replayedTopic     = "troupe_replayed_from_topic"
	replayedPartition = "troupe_replayed_from_partition"
	replayedOffset    = "troupe_replayed_from_offset"
	dlqTopic          = "troupe_dlq_topic"
	dlqPartition      = "troupe_dlq_partition"
	dlqOffset         = "troupe_dlq_offset"
)

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
	add(HeaderTimer, m.Timer)
	return h
}

// FromRecord reads the metadata of r. Missing headers leave fields empty,
// except the saga id, which falls back to the record key, and the id: a
// record without ce_id (or with an empty one) gets DerivedID of its place,
// with IDDerived set; of the dead letter it was replayed from for a replay,
// of the failed record's place for a dead letter. ce_time
// is read by ParseTime; a value it does not accept is an error. When a header
// appears twice the first counts, as for Header.
func FromRecord(r *kgo.Record) (Metadata, error) {
	var m Metadata
	var seen uint16
	var from [2][3]string // replayed from, dead letter of: topic, partition, offset
	for _, h := range r.Headers {
		v := string(h.Value)
		var f *string
		var bit uint16
		switch h.Key {
		case HeaderID:
			f, bit = &m.ID, 1<<0
		case HeaderSource:
			f, bit = &m.Source, 1<<1
		case HeaderType:
			f, bit = &m.Type, 1<<2
		case HeaderSagaID:
			f, bit = &m.SagaID, 1<<3
		case HeaderCausationID:
			f, bit = &m.CausationID, 1<<4
		case HeaderCorrelationID:
			f, bit = &m.CorrelationID, 1<<5
		case HeaderTraceParent:
			f, bit = &m.TraceParent, 1<<6
		case HeaderTimer:
			f, bit = &m.Timer, 1<<14
		case HeaderTime:
			if seen&(1<<7) != 0 {
				continue
			}
			seen |= 1 << 7
			if strings.TrimSpace(v) == "" {
				continue
			}
			t, err := ParseTime(v)
			if err != nil {
				return m, fmt.Errorf("header %s: %w", HeaderTime, err)
			}
			m.Time = t
			continue
		case replayedTopic:
			f, bit = &from[0][0], 1<<8
		case replayedPartition:
			f, bit = &from[0][1], 1<<9
		case replayedOffset:
			f, bit = &from[0][2], 1<<10
		case dlqTopic:
			f, bit = &from[1][0], 1<<11
		case dlqPartition:
			f, bit = &from[1][1], 1<<12
		case dlqOffset:
			f, bit = &from[1][2], 1<<13
		default:
			continue
		}
		if seen&bit == 0 {
			seen |= bit
			*f = v
		}
	}
	if m.SagaID == "" {
		m.SagaID = string(r.Key)
	}
	if m.ID == "" {
		m.ID, m.IDDerived = DerivedID(r.Topic, r.Partition, r.Offset), true
		for _, c := range from {
			p, errP := strconv.ParseInt(c[1], 10, 32)
			o, errO := strconv.ParseInt(c[2], 10, 64)
			if c[0] != "" && errP == nil && errO == nil {
				m.ID = DerivedID(c[0], int32(p), o)
				break
			}
		}
	}
	return m, nil
}

// The forms of ce_time that ParseTime accepts besides epoch milliseconds:
// RFC 3339, also with a space for the T, without a zone (UTC), or with a
// zone without its colon. A fractional second is accepted after the seconds
// of each.
var timeLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05Z0700",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05Z0700",
}

// Bounds of what RFC 3339 can write: years 0000 to 9999, in UTC.
var (
	minTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ParseTime reads a ce_time as producers send it: RFC 3339 with or without
// a zone (none means UTC, as Python's datetime.utcnow().isoformat() writes
// it), with or without fractional seconds, with a T or a space between date
// and time, or an integer of milliseconds since the Unix epoch. The result
// is in UTC. Anything else, or a time outside the years 0000-9999, is an
// error that lists the accepted forms.
func ParseTime(s string) (time.Time, error) {
	v := strings.TrimSpace(s)
	if digits := strings.TrimPrefix(v, "-"); digits != "" && strings.Trim(digits, "0123456789") == "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < minTime.UnixMilli() || ms >= maxTime.UnixMilli() {
			return time.Time{}, fmt.Errorf("%q: epoch milliseconds out of range (years 0000-9999)", s)
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	v = strings.Map(func(r rune) rune {
		switch r {
		case 't':
			return 'T'
		case 'z':
			return 'Z'
		}
		return r
	}, v)
	for _, layout := range timeLayouts {
		t, err := time.Parse(layout, v)
		if err != nil {
			continue
		}
		if t = t.UTC(); t.Before(minTime) || !t.Before(maxTime) {
			return time.Time{}, fmt.Errorf("%q: out of range (years 0000-9999 in UTC)", s)
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: send RFC 3339 (2006-01-02T15:04:05.123Z; without a zone it is taken as UTC) or epoch milliseconds", s)
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
