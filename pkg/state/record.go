package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
)

// ErrBadRecord means a stored value cannot be decoded: the store or the
// changelog was written by an incompatible version, or is corrupt.
var ErrBadRecord = errors.New("malformed state record")

const recordVersion = 1

// Instance is what a step keeps for one saga instance under InstanceKey: the
// user's state, the hashes of the most recent event ids it processed (to
// drop a duplicate produce of the same event), and whether the saga ended.
// Keeping all three in one value makes processing one event one state write
// and one changelog record, not three.
type Instance struct {
	// State is the user's state, encoded by the step; nil when there is none.
	State []byte
	// Ended marks an instance whose saga ended (SagaEnded was consumed):
	// later forward inputs are dropped; compensation commands still run.
	Ended bool
	// Completed marks an instance for which the step emitted its
	// completed_by event: a compensation command must run the handler.
	Completed bool
	// Compensated marks an instance whose compensation ran (or was answered
	// as a null compensation): a repeated command is acked again with no
	// effect, and forward inputs are dropped.
	Compensated bool
	// Seen holds hashes of recently processed ce_ids, oldest first.
	Seen []uint64
	// Applied is, per input topic (by TopicHash), the offset of the last
	// record of this instance that a handler applied. An instance's records
	// of one topic are applied in offset order (they all live in the
	// instance's partition, and one instance runs one record at a time),
	// so a record at or before it is a redelivery, however far the
	// partition's stored progress lags the state: the state and this
	// offset are one value, written and restored together.
	Applied []AppliedOffset
}

// AppliedOffset is the offset of the last record of one topic applied to an
// instance.
type AppliedOffset struct {
	Topic  uint32 // TopicHash of the topic's name
	Offset int64
}

// TopicHash names a topic in Instance.Applied in 4 bytes rather than the
// name, which an instance record would repeat per topic.
func TopicHash(topic string) uint32 {
	h := uint32(2166136261) // FNV-1a, without hash/fnv's allocation
	for i := 0; i < len(topic); i++ {
		h ^= uint32(topic[i])
		h *= 16777619
	}
	return h
}

// AppliedAt returns the offset of the last record of topic (a TopicHash)
// applied to the instance, and whether there is one.
func (in *Instance) AppliedAt(topic uint32) (int64, bool) {
	for _, a := range in.Applied {
		if a.Topic == topic {
			return a.Offset, true
		}
	}
	return 0, false
}

// SetApplied records offset as the last record of topic applied.
func (in *Instance) SetApplied(topic uint32, offset int64) {
	for i := range in.Applied {
		if in.Applied[i].Topic == topic {
			in.Applied[i].Offset = offset
			return
		}
	}
	in.Applied = append(in.Applied, AppliedOffset{Topic: topic, Offset: offset})
}

const (
	flagHasState = 1 << iota
	flagEnded
	flagCompleted
	flagCompensated
	flagHasApplied
)

// IDHash is the hash of an event id that Instance.Seen keeps. 64 bits keep a
// false "duplicate" out of reach (about 1 in 10^17 for a window of 16).
func IDHash(id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64()
}

// HasSeen reports whether the event id is among the recently processed ones.
func (in *Instance) HasSeen(id string) bool {
	return id != "" && slices.Contains(in.Seen, IDHash(id))
}

// Remember records id as processed, keeping at most window ids.
func (in *Instance) Remember(id string, window int) {
	if id == "" || window <= 0 {
		return
	}
	in.Seen = append(in.Seen, IDHash(id))
	if over := len(in.Seen) - window; over > 0 {
		in.Seen = append(in.Seen[:0], in.Seen[over:]...)
	}
}

// Append appends the encoding of in to b.
func (in *Instance) Append(b []byte) []byte {
	var flags byte
	if in.State != nil {
		flags |= flagHasState
	}
	if in.Ended {
		flags |= flagEnded
	}
	if in.Completed {
		flags |= flagCompleted
	}
	if in.Compensated {
		flags |= flagCompensated
	}
	if len(in.Applied) > 0 {
		flags |= flagHasApplied
	}
	b = append(b, recordVersion, flags)
	b = binary.AppendUvarint(b, uint64(len(in.Seen)))
	for _, h := range in.Seen {
		b = binary.BigEndian.AppendUint64(b, h)
	}
	if len(in.Applied) > 0 {
		b = binary.AppendUvarint(b, uint64(len(in.Applied)))
		for _, a := range in.Applied {
			b = binary.BigEndian.AppendUint32(b, a.Topic)
			b = binary.AppendUvarint(b, uint64(a.Offset))
		}
	}
	return append(b, in.State...)
}

// DecodeInstance decodes an instance record. The result does not alias b.
func DecodeInstance(b []byte) (Instance, error) {
	var in Instance
	if len(b) < 3 || b[0] != recordVersion {
		return in, fmt.Errorf("%w: instance record of %d bytes, version %d", ErrBadRecord, len(b), first(b))
	}
	flags := b[1]
	n, w := binary.Uvarint(b[2:])
	if w <= 0 || n > uint64(len(b)) {
		return in, fmt.Errorf("%w: instance record seen count", ErrBadRecord)
	}
	rest := b[2+w:]
	if uint64(len(rest)) < 8*n {
		return in, fmt.Errorf("%w: instance record truncated", ErrBadRecord)
	}
	in.Seen = make([]uint64, n)
	for i := range in.Seen {
		in.Seen[i] = binary.BigEndian.Uint64(rest[8*i:])
	}
	rest = rest[8*n:]
	if flags&flagHasApplied != 0 {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n == 0 || n > uint64(len(rest)) {
			return in, fmt.Errorf("%w: instance record applied count", ErrBadRecord)
		}
		rest = rest[w:]
		in.Applied = make([]AppliedOffset, n)
		for i := range in.Applied {
			if len(rest) < 5 {
				return in, fmt.Errorf("%w: instance record applied offsets truncated", ErrBadRecord)
			}
			in.Applied[i].Topic = binary.BigEndian.Uint32(rest)
			off, w := binary.Uvarint(rest[4:])
			if w <= 0 {
				return in, fmt.Errorf("%w: instance record applied offset", ErrBadRecord)
			}
			in.Applied[i].Offset = int64(off)
			rest = rest[4+w:]
		}
	}
	if flags&flagHasState != 0 {
		in.State = append(make([]byte, 0, len(rest)), rest...)
	}
	in.Ended = flags&flagEnded != 0
	in.Completed = flags&flagCompleted != 0
	in.Compensated = flags&flagCompensated != 0
	return in, nil
}

// Timer is a scheduled event: at its fire time the step emits Value to Topic,
// keyed by the instance id, with headers built from the other fields.
type Timer struct {
	// EventID is the ce_id of the event it emits, fixed when the timer is set
	// so that a timer fired twice (at-least-once) is dropped downstream.
	EventID string
	Topic   string
	// Type is the ce_type of the event; Value its encoded value.
	Type  string
	Value []byte
	// Metadata of the event that set the timer, carried into the fired event.
	SagaID        string
	CorrelationID string
	CausationID   string
	TraceParent   string
}

// Append appends the encoding of t to b.
func (t *Timer) Append(b []byte) []byte {
	b = append(b, recordVersion)
	for _, s := range []string{t.EventID, t.Topic, t.Type, t.SagaID, t.CorrelationID, t.CausationID, t.TraceParent} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, t.Value...)
}

// DecodeTimer decodes a timer record. The result does not alias b.
func DecodeTimer(b []byte) (Timer, error) {
	var t Timer
	if len(b) < 1 || b[0] != recordVersion {
		return t, fmt.Errorf("%w: timer record of %d bytes, version %d", ErrBadRecord, len(b), first(b))
	}
	rest := b[1:]
	for _, dst := range []*string{&t.EventID, &t.Topic, &t.Type, &t.SagaID, &t.CorrelationID, &t.CausationID, &t.TraceParent} {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return t, fmt.Errorf("%w: timer record truncated", ErrBadRecord)
		}
		*dst = string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
	}
	t.Value = append([]byte(nil), rest...)
	return t, nil
}

// EncodeOffset and DecodeOffset are the value of an input offset or meta
// offset key.
func EncodeOffset(off int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(off)) }

// DecodeOffset decodes a value written by EncodeOffset.
func DecodeOffset(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: offset of %d bytes", ErrBadRecord, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// Progress is how far a step has processed one input partition: every
// offset below Next, and the offsets in Done (each at or above Next, in
// ascending order). Records of different instances run concurrently, so an
// interval can end with a record unfinished (its handler did not start in
// time, or its partition holds it for a retry) while later records of other
// instances are done: they are remembered in Done, so that when the
// partition is fetched again from Next they are not processed twice.
type Progress struct {
	Next int64
	Done []int64
}

// Has reports whether offset off was processed.
func (p Progress) Has(off int64) bool {
	if off < p.Next {
		return true
	}
	_, ok := slices.BinarySearch(p.Done, off)
	return ok
}

// EncodeProgress encodes p as the value of an input offset key: Next as 8
// bytes big-endian (the encoding of EncodeOffset, so that a store written
// before Done existed reads as it did), then, if any, the done offsets as
// uvarint deltas.
func EncodeProgress(p Progress) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+2*len(p.Done)), uint64(p.Next))
	prev := p.Next
	for _, off := range p.Done {
		b = binary.AppendUvarint(b, uint64(off-prev))
		prev = off
	}
	return b
}

// DecodeProgress decodes a value written by EncodeProgress (or EncodeOffset).
func DecodeProgress(b []byte) (Progress, error) {
	if len(b) < 8 {
		return Progress{}, fmt.Errorf("%w: input progress of %d bytes", ErrBadRecord, len(b))
	}
	p := Progress{Next: int64(binary.BigEndian.Uint64(b))}
	prev := p.Next
	for rest := b[8:]; len(rest) > 0; {
		d, n := binary.Uvarint(rest)
		if n <= 0 || d == 0 {
			return Progress{}, fmt.Errorf("%w: input progress truncated", ErrBadRecord)
		}
		prev += int64(d)
		p.Done = append(p.Done, prev)
		rest = rest[n:]
	}
	return p, nil
}
