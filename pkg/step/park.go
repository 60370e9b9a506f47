package step

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// Parking keeps the order of one instance's events across a dead letter
// (README: Writing a step). Everything lives under the state key kind q, so it is in the
// changelog and moves with its partition like all state:
//
//	q <id> seq 0    the instance's head: blocked by a dead letter (waiting),
//	                or releasing its parked events (draining)
//	q <id> seq n    parked event n (n >= 1, in arrival order)
//
// An instance with a head is blocked: every event of it that arrives is
// parked (stored and consumed), except the replay of the dead letter it
// waits for. When that replay arrives, or a discard marker for the dead
// letter, the instance is released: its parked events are written back to
// the step's retry topic, on its partition, marked with their sequence
// number (troupe_unparked), deleted from the store, and the head becomes
// draining. They come back behind the record that released them and run
// through the normal path (dedupe, handler, retries, dead letter). Events
// that arrive meanwhile are parked behind them; when the last one released
// comes back, those are released in turn, or the head is deleted when none
// are left.
//
// Writing parked events back, rather than running them from the store,
// keeps one path for every event: a parked event that fails is retried in
// place and dead-lettered like any other, and then the events released
// behind it are parked again under their own sequence numbers, so their
// order survives any number of failures.
//
// The replay that releases an instance releases it before it runs: if it
// fails again, its partition holds at it (the events written back are
// behind it) until it succeeds or is dead-lettered again, which blocks the
// instance again and parks the events written back as they arrive.

// Head statuses.
const (
	headWaiting  byte = 1 // a dead letter is outstanding
	headDraining byte = 2 // parked events were released and are coming back
)

const parkVersion = 1

// head is an instance's parking record (seq 0).
type head struct {
	status byte
	// next is the next sequence number to park under; last, while draining,
	// the highest one written back.
	next, last uint64
	// The dead letter the instance waits for (or, draining, the one whose
	// release started the drain): its event's ce_id and ce_type, and where
	// the record failed.
	eventID, eventType string
	failed             dlq.Coordinates
	failedAt           time.Time
}

func (h *head) append(b []byte) []byte {
	b = append(b, parkVersion, h.status)
	b = binary.AppendUvarint(b, h.next)
	b = binary.AppendUvarint(b, h.last)
	for _, s := range []string{h.eventID, h.eventType, h.failed.Topic} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, int64(h.failed.Partition))
	b = binary.AppendVarint(b, h.failed.Offset)
	return binary.AppendVarint(b, h.failedAt.UnixNano())
}

func decodeHead(b []byte) (*head, error) {
	d := decoder{b: b}
	if d.byte() != parkVersion {
		return nil, fmt.Errorf("%w: parking head of version %d", state.ErrBadRecord, first(b))
	}
	h := &head{status: d.byte(), next: d.uvarint(), last: d.uvarint()}
	h.eventID, h.eventType, h.failed.Topic = d.str(), d.str(), d.str()
	h.failed.Partition = int32(d.varint())
	h.failed.Offset = d.varint()
	h.failedAt = time.Unix(0, d.varint())
	if d.err != nil || (h.status != headWaiting && h.status != headDraining) {
		return nil, fmt.Errorf("%w: parking head", state.ErrBadRecord)
	}
	return h, nil
}

// appendParked encodes a parked record: where it was consumed, its key,
// timestamp, headers and value.
func appendParked(b []byte, r *kgo.Record) []byte {
	b = append(b, parkVersion)
	b = binary.AppendUvarint(b, uint64(len(r.Topic)))
	b = append(b, r.Topic...)
	b = binary.AppendVarint(b, int64(r.Partition))
	b = binary.AppendVarint(b, r.Offset)
	b = binary.AppendVarint(b, r.Timestamp.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	n := 0
	for _, h := range r.Headers {
		if h.Key != dlq.HeaderUnparked {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for _, h := range r.Headers {
		if h.Key == dlq.HeaderUnparked {
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	if r.Value == nil {
		return append(b, 0)
	}
	return append(append(b, 1), r.Value...)
}

func decodeParked(b []byte) (*kgo.Record, error) {
	d := decoder{b: b}
	if d.byte() != parkVersion {
		return nil, fmt.Errorf("%w: parked event of version %d", state.ErrBadRecord, first(b))
	}
	r := &kgo.Record{Topic: d.str(), Partition: int32(d.varint()), Offset: d.varint()}
	r.Timestamp = time.UnixMilli(d.varint())
	r.Key = d.bytes()
	n := d.uvarint()
	if n > uint64(len(b)) {
		d.err = errors.New("header count")
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: d.str(), Value: d.bytes()})
	}
	if d.byte() == 1 {
		r.Value = append([]byte{}, d.b...)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: parked event: %v", state.ErrBadRecord, d.err)
	}
	return r, nil
}

// parkPrefix is the key prefix of an instance's parking keys.
func parkPrefix(id string) []byte {
	k := state.ParkedKey(id, 0)
	return k[:len(k)-8]
}

func headKey(id string) []byte { return state.ParkedKey(id, 0) }

// parseParkKey returns the instance id and sequence number of a q key.
func parseParkKey(k []byte) (id string, seq uint64, err error) {
	if len(k) < 1+2+8 || k[0] != state.KindParked {
		return "", 0, fmt.Errorf("%w: %q is not a parked key", state.ErrBadKey, k)
	}
	n := int(binary.BigEndian.Uint16(k[1:]))
	if len(k) != 1+2+n+8 {
		return "", 0, fmt.Errorf("%w: %q is not a parked key", state.ErrBadKey, k)
	}
	return string(k[3 : 3+n]), binary.BigEndian.Uint64(k[3+n:]), nil
}

// parkCycle is what one interval changed in a task's parking, applied to the
// task when the interval commits.
type parkCycle struct {
	heads  map[string]bool // instance -> has a head now
	parked int64           // change in parked events
}

// parking is a task's committed view of its parking: which instances have
// a head, and how many events are parked. Owned by the loop; parked is also
// taken out of the gauge by the group's goroutine on revocation.
type parking struct {
	heads  map[string]struct{}
	parked atomic.Int64
}

// loadParking reads t's parking from the store when t is activated. Loop
// only, with rt.mu held.
func (rt *Runtime) loadParking(t *task) error {
	heads := map[string]struct{}{}
	var parked int64
	err := rt.store.Scan(t.p, []byte{state.KindParked}, func(k, _ []byte) error {
		id, seq, err := parseParkKey(k)
		if err != nil {
			return err
		}
		if seq == 0 {
			heads[id] = struct{}{}
		} else {
			parked++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load parked events of partition %d: %w", t.p, err)
	}
	t.parking.heads = heads
	t.parking.parked.Store(parked)
	rt.m.parked.Add(float64(parked))
	return nil
}

// applyParking moves the interval's parking changes into the tasks, once the
// interval committed.
func (c *cycle) applyParking() {
	for _, tc := range c.tasks {
		if tc.t == nil {
			continue
		}
		for id, has := range tc.park.heads {
			if has {
				tc.t.parking.heads[id] = struct{}{}
			} else {
				delete(tc.t.parking.heads, id)
			}
		}
		if tc.park.parked != 0 {
			tc.t.parking.parked.Add(tc.park.parked)
			c.rt.m.parked.Add(float64(tc.park.parked))
			if tc.t.state.Load() == taskRevoked {
				// Revoked meanwhile: take it out again (see revokeLocked).
				c.rt.m.parked.Sub(float64(tc.t.parking.parked.Swap(0)))
			}
		}
	}
}

func (tc *taskCycle) setHead(id string, has bool) {
	if tc.park.heads == nil {
		tc.park.heads = map[string]bool{}
	}
	tc.park.heads[id] = has
}

// hasHead reports whether instance id has a head, as this interval sees it.
func (tc *taskCycle) hasHead(id string) bool {
	if has, ok := tc.park.heads[id]; ok {
		return has
	}
	_, ok := tc.t.parking.heads[id]
	return ok
}

// intercept runs before a record is handled, and reports whether it
// consumed the record: a discard marker, or an event of a blocked instance,
// which it parks. A replay of the dead letter a blocked instance waits for
// releases the instance and is handled; so are the events coming back from
// the park while it drains.
func (c *cycle) intercept(tc *taskCycle, r *kgo.Record) (consumed bool, err error) {
	retry := r.Topic == c.rt.def.retry()
	if !retry && len(tc.t.parking.heads) == 0 && len(tc.park.heads) == 0 {
		return false, nil // the common case: nothing blocked in this partition
	}
	id := instanceOf(r)
	if retry {
		if d, ok := dlq.ParseDiscard(r); ok {
			return true, c.discard(tc, r, id, d)
		}
	}
	if id == "" || !tc.hasHead(id) {
		return false, nil
	}
	h, err := c.head(tc, id)
	if err != nil || h == nil {
		return false, err
	}
	if retry {
		ceID, _ := event.Header(r, event.HeaderID)
		if _, replay := dlq.ReplayedFrom(r); replay {
			if ceID != h.eventID {
				return true, c.park(tc, r, id, h, 0)
			}
			if h.status == headWaiting {
				// Released before it runs; see the type comment.
				err = c.release(tc, id, h, "replayed")
			}
			return false, err
		}
		if seq, ok := unparkedSeq(r); ok {
			if h.status == headWaiting {
				return true, c.park(tc, r, id, h, seq)
			}
			if seq >= h.last {
				err = c.release(tc, id, h, "")
			}
			return false, err
		}
	}
	return true, c.park(tc, r, id, h, 0)
}

// head reads instance id's head in this interval's transaction.
func (c *cycle) head(tc *taskCycle, id string) (*head, error) {
	v, ok, err := c.txn.Get(tc.t.p, headKey(id))
	if err != nil || !ok {
		return nil, err
	}
	h, err := decodeHead(v)
	if err != nil {
		return nil, fmt.Errorf("instance %q: %w", id, err)
	}
	return h, nil
}

func (c *cycle) putHead(tc *taskCycle, id string, h *head) error {
	c.buf = h.append(c.buf[:0])
	if err := c.txn.Set(tc.t.p, headKey(id), c.buf); err != nil {
		return err
	}
	tc.setHead(id, true)
	return nil
}

// park stores r as instance id's next parked event, or under seq when it
// comes back from the park (so that it keeps its place).
func (c *cycle) park(tc *taskCycle, r *kgo.Record, id string, h *head, seq uint64) error {
	p := tc.t.p
	if seq != 0 {
		if _, taken, err := c.txn.Get(p, state.ParkedKey(id, seq)); err != nil {
			return err
		} else if taken {
			seq = 0
		}
	}
	if seq == 0 || seq >= h.next {
		if seq == 0 {
			seq = h.next
		}
		h.next = seq + 1
		if err := c.putHead(tc, id, h); err != nil {
			return err
		}
	}
	c.buf = appendParked(c.buf[:0], r)
	if err := c.txn.Set(p, state.ParkedKey(id, seq), c.buf); err != nil {
		return err
	}
	tc.park.parked++
	c.rt.m.parkedEvents.Inc()
	c.rt.log.Debug().Str(logging.FieldSaga, id).Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, r.Partition).
		Int64(logging.FieldOffset, r.Offset).Uint64("seq", seq).Msg("event parked behind a dead letter")
	return nil
}

// block makes instance id wait for the dead letter of r: its later events
// are parked. An instance that was draining keeps its parked events and
// sequence numbers.
func (c *cycle) block(tc *taskCycle, r *kgo.Record, id string, at time.Time) error {
	h, err := c.head(tc, id)
	if err != nil {
		return err
	}
	if h == nil {
		h = &head{next: 1}
	}
	h.status = headWaiting
	h.eventID, _ = event.Header(r, event.HeaderID)
	h.eventType, _ = event.Header(r, event.HeaderType)
	h.failed = dlq.Of(r)
	h.failedAt = at
	return c.putHead(tc, id, h)
}

// discard handles a discard marker: it releases the instance if its
// outstanding dead letter is the discarded event (same ce_id; a marker
// without one matches by key).
func (c *cycle) discard(tc *taskCycle, r *kgo.Record, id string, d dlq.Discarded) error {
	if id != "" && tc.hasHead(id) {
		h, err := c.head(tc, id)
		if err != nil {
			return err
		}
		if h != nil && h.status == headWaiting && (d.EventID == "" || d.EventID == h.eventID) {
			return c.release(tc, id, h, "discarded")
		}
	}
	c.rt.m.ignored.Inc()
	c.rt.log.Debug().Str(logging.FieldSaga, id).Int64(logging.FieldOffset, r.Offset).Str("event_id", d.EventID).
		Msg("discard marker for no outstanding dead letter; ignored")
	return nil
}

// release writes instance id's parked events back to the retry topic, in
// order, and makes the head draining; with none parked, it deletes the
// head. why, when set, is logged (an operator's replay or discard).
func (c *cycle) release(tc *taskCycle, id string, h *head, why string) error {
	rt := c.rt
	p := tc.t.p
	prefix := parkPrefix(id)
	type parked struct {
		seq uint64
		v   []byte
	}
	var ps []parked
	err := c.txn.Scan(p, state.ParkedKey(id, 1), state.PrefixEnd(prefix), func(k, v []byte) (bool, error) {
		_, seq, err := parseParkKey(k)
		if err != nil {
			return false, err
		}
		ps = append(ps, parked{seq: seq, v: append([]byte(nil), v...)})
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, pk := range ps {
		orig, err := decodeParked(pk.v)
		if err != nil {
			return fmt.Errorf("instance %q parked event %d: %w", id, pk.seq, err)
		}
		out := &kgo.Record{
			Topic: rt.def.retry(), Partition: p, Key: orig.Key, Value: orig.Value, Timestamp: orig.Timestamp,
			Headers: append(orig.Headers, kgo.RecordHeader{Key: dlq.HeaderUnparked, Value: strconv.AppendUint(nil, pk.seq, 10)}),
		}
		rt.cl.Produce(c.pctx, out, c.promise)
		if err := c.txn.Delete(p, state.ParkedKey(id, pk.seq)); err != nil {
			return err
		}
	}
	tc.park.parked -= int64(len(ps))
	if why != "" {
		rt.log.Info().Str(logging.FieldSaga, id).Int32(logging.FieldPartition, p).Str("event_id", h.eventID).
			Str("dead_letter_of", h.failed.String()).Int("parked", len(ps)).Msgf("dead letter %s; releasing the instance's parked events", why)
	}
	if len(ps) == 0 {
		tc.setHead(id, false)
		return c.txn.Delete(p, headKey(id))
	}
	h.status = headDraining
	h.last = ps[len(ps)-1].seq
	return c.putHead(tc, id, h)
}

// unparkedSeq returns the sequence number of an event written back from the
// park.
func unparkedSeq(r *kgo.Record) (uint64, bool) {
	v, ok := event.Header(r, dlq.HeaderUnparked)
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	return seq, err == nil && seq > 0
}

// decoder reads the encodings above, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = errors.New("truncated " + what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("bytes")
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
