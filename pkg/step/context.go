package step

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// Context is what a handler gets with its event: the instance it belongs
// to, the instance's state, and the ways to emit events and set timers.
//
// Nothing a handler does takes effect unless it returns nil: state changes,
// emitted events and timers are kept aside and applied together, in the same
// transaction as the input's offset (under ExactlyOnce). A Context is valid
// only during its handler call.
type Context[S any] struct {
	c *call
}

// call is the per-record state behind a Context, without the type of S.
type call struct {
	ctx  context.Context
	rt   *Runtime
	rec  *kgo.Record
	meta event.Metadata
	id   string
	inst *state.Instance
	// timer is the timer an OnTimer call runs for; empty for a record.
	timer string

	emits  []*kgo.Record
	timers []timerOp
	// derived counts the event ids derived from the input so far.
	derived int
	// err is the first failure of an operation that returns no error
	// (SetState, Cancel); it becomes the handler's error.
	err error
	log *zerolog.Logger
}

type timerOp struct {
	name   string
	cancel bool
	at     time.Time
	timer  state.Timer
}

// Context returns the step's context, cancelled when the step shuts down.
// Pass it to calls the handler makes to other services.
func (c *Context[S]) Context() context.Context { return c.c.ctx }

// Key is the instance id: the record key, which is the saga id.
func (c *Context[S]) Key() string { return c.c.id }

// Meta is the metadata (CloudEvents headers) of the event being handled.
func (c *Context[S]) Meta() event.Metadata { return c.c.meta }

// Logger is the step's logger with the record's coordinates (saga, topic,
// partition, offset).
func (c *Context[S]) Logger() *zerolog.Logger {
	if c.c.log == nil {
		l := c.c.rt.log.With().Str(logging.FieldSaga, c.c.id).Str(logging.FieldTopic, c.c.rec.Topic).
			Int32(logging.FieldPartition, c.c.rec.Partition).Int64(logging.FieldOffset, c.c.rec.Offset).Logger()
		c.c.log = &l
	}
	return c.c.log
}

// State returns the instance's state, and false if it has none yet.
func (c *Context[S]) State() (S, bool) {
	var s S
	if c.c.inst.State == nil {
		return s, false
	}
	if err := json.Unmarshal(c.c.inst.State, &s); err != nil {
		c.c.fail(Permanent(fmt.Errorf("decode state of instance %q as %T: %w", c.c.id, s, err)))
		return s, false
	}
	return s, true
}

// SetState replaces the instance's state. If s cannot be encoded (as JSON),
// the handler fails with that error.
func (c *Context[S]) SetState(s S) {
	b, err := json.Marshal(s)
	if err != nil {
		c.c.fail(Permanent(fmt.Errorf("encode state of instance %q: %w", c.c.id, err)))
		return
	}
	if n := len(c.c.id) + len(b); n > maxStateBytes {
		c.c.fail(Permanent(fmt.Errorf("state of instance %q is %d bytes as JSON, over the %d its changelog record may take: keep large data elsewhere and a reference to it (an id, a URL) in the state", c.c.id, n, maxStateBytes)))
		return
	}
	c.c.inst.State = b
}

// maxStateBytes bounds an instance's state (and key), leaving room in its
// changelog record for what the runtime keeps beside it (the ids of the
// events it remembers, the offsets it applied, its flags).
const maxStateBytes = dlq.MaxBytes - 64<<10

// fit fails the call, for good, if r would not fit in a record of its
// topic (Runtime.recordLimit): a record the producer or the broker refuses
// aborts the transaction carrying it again at every attempt, which would
// stall every partition of the process. The input is dead-lettered instead
// (retrying makes the event no smaller).
func (c *call) fit(r *kgo.Record) error {
	n := dlq.RecordSize(r)
	if n <= dlq.MaxBytes && n <= smallRecord {
		return nil
	}
	limit, why := c.rt.recordLimit(c.ctx, r.Topic)
	if n <= limit {
		return nil
	}
	err := Permanent(fmt.Errorf("emit %s to %s: the record is %d bytes, over the %d one may take (%s): emit a reference to the payload (an id, a URL) instead of the payload", headerValue(r, event.HeaderType), r.Topic, n, limit, why))
	c.fail(err)
	return err
}

// DeleteState removes the instance's state. The instance still remembers
// the events it processed, so a late duplicate is still dropped.
func (c *Context[S]) DeleteState() { c.c.inst.State = nil }

// Emit produces ev to topic, keyed by the instance id, with headers caused
// by the event being handled. Its ce_id is derived from the input's, so a
// handler that runs again after a crash (AtLeastOnce) emits the same ids and
// downstream steps drop the copies. An event too large for a record (over
// dlq.MaxBytes with its headers, or over its topic's max.message.bytes) is
// a Permanent error, and fails the handler even if it ignores it: the
// input is dead-lettered.
func (c *Context[S]) Emit(topic string, ev any) error {
	r, err := c.c.record(topic, ev, "")
	if err != nil {
		return err
	}
	c.c.emits = append(c.c.emits, r)
	return nil
}

// After sets the instance's timer name to emit ev to topic after d (from
// now). Setting a timer that is already set replaces it. Timers are state:
// they survive restarts and move with their partition.
func (c *Context[S]) After(d time.Duration, name, topic string, ev any) error {
	return c.At(time.Now().Add(d), name, topic, ev)
}

// At sets the instance's timer name to emit ev to topic at t. A time in the
// past fires at the start of the next interval; timers fire at most a
// commit interval (100 ms) after they are due.
func (c *Context[S]) At(t time.Time, name, topic string, ev any) error {
	r, err := c.c.record(topic, ev, name)
	if err != nil {
		return err
	}
	m := c.c.derivedMeta("", "")
	c.c.timers = append(c.c.timers, timerOp{name: name, at: t, timer: state.Timer{
		EventID: headerValue(r, event.HeaderID), Topic: topic, Type: headerValue(r, event.HeaderType), Value: r.Value,
		SagaID: m.SagaID, CorrelationID: m.CorrelationID, CausationID: m.CausationID, TraceParent: m.TraceParent,
	}})
	return nil
}

// Cancel cancels the instance's timer name, if it is set.
func (c *Context[S]) Cancel(name string) {
	c.c.timers = append(c.c.timers, timerOp{name: name, cancel: true})
}

func (c *call) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// record encodes ev into a record for topic with derived metadata.
func (c *call) record(topic string, ev any, timer string) (*kgo.Record, error) {
	typ, err := c.rt.cfg.Codec.TypeName(ev)
	if err != nil {
		return nil, fmt.Errorf("emit to %s: %w", topic, err)
	}
	v, err := c.rt.cfg.Codec.Encode(c.ctx, topic, ev)
	if err != nil {
		return nil, fmt.Errorf("emit %s to %s: %w", typ, topic, err)
	}
	m := c.derivedMeta(typ, timer)
	r := &kgo.Record{Topic: topic, Key: []byte(c.id), Value: v, Headers: m.Headers()}
	if err := c.fit(r); err != nil {
		return nil, err
	}
	return r, nil
}

// derivedMeta is the metadata of the next event this call emits: caused by
// the input, like event.CausedBy, but with an id derived from the input.
func (c *call) derivedMeta(typ, timer string) event.Metadata {
	saga := c.meta.SagaID
	if saga == "" {
		saga = c.id
	}
	corr := c.meta.CorrelationID
	if corr == "" {
		corr = saga
	}
	m := event.Metadata{
		Source: c.rt.source, Type: typ, Time: time.Now().UTC(), SagaID: saga,
		CausationID: c.meta.ID, CorrelationID: corr, TraceParent: c.meta.TraceParent, Timer: c.timer,
	}
	if typ != "" {
		c.derived++
		m.ID = deriveID(c.seed(), c.rt.source, timer, c.derived, c.eventTime())
	}
	return m
}

// seed identifies the input: its ce_id, or its coordinates without one.
func (c *call) seed() string {
	if c.meta.ID != "" {
		return c.meta.ID
	}
	return c.rec.Topic + "/" + strconv.Itoa(int(c.rec.Partition)) + "/" + strconv.FormatInt(c.rec.Offset, 10)
}

func (c *call) eventTime() time.Time {
	if !c.meta.Time.IsZero() {
		return c.meta.Time
	}
	return c.rec.Timestamp
}

// deriveID returns a UUIDv7 whose time is the input's and whose random bits
// are a hash of (input, step, timer, n): the same input handled twice emits
// the same ids.
func deriveID(seed, source, timer string, n int, at time.Time) string {
	h := fnv.New128a()
	_, _ = h.Write([]byte(seed))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(source))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(timer))
	_, _ = h.Write(binary.BigEndian.AppendUint64([]byte{0}, uint64(n)))
	var u uuid.UUID
	h.Sum(u[:0])
	ms := uint64(max(at.UnixMilli(), 0))
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 4122 variant
	return u.String()
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
