package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Kinds of state key: the first byte of every key in a partition. The layout
// of one partition, in key order:
//
//	i <instance id>                                  instance record (user state, recent ce_ids, ended flag)
//	n <u16 len><instance id><timer name>             timer index: when the instance's named timer fires
//	o <topic>                                        next input offset applied from topic (at-least-once dedupe)
//	q <u16 len><instance id><u64 seq>                parking: seq 0 the instance's head (blocked by a dead letter), seq n its parked events (package step, park.go)
//	t <u64 fire time, unix ns><u16 len><instance id><timer name>   timer, ordered by fire time
//
// Every one of these is also written to the changelog, with the state key as
// the record key, so that a restore rebuilds all of it.
const (
	KindInstance    byte = 'i'
	KindTimerIndex  byte = 'n'
	KindInputOffset byte = 'o'
	KindParked      byte = 'q'
	KindTimer       byte = 't'
)

// MaxInstanceIDLen bounds an instance id (a record key) in a state key.
const MaxInstanceIDLen = math.MaxUint16

// ErrBadKey means a state key does not follow the layout above.
var ErrBadKey = errors.New("malformed state key")

// InstanceKey is the key of an instance's record.
func InstanceKey(id string) []byte {
	k := make([]byte, 0, 1+len(id))
	return append(append(k, KindInstance), id...)
}

// TimerKey is the key of an instance's named timer firing at at. Timers sort
// by fire time, so the due ones are a prefix of the timer range.
func TimerKey(at time.Time, id, name string) []byte {
	k := make([]byte, 0, 1+8+2+len(id)+len(name))
	k = append(k, KindTimer)
	k = binary.BigEndian.AppendUint64(k, fireTime(at))
	return appendIDName(k, id, name)
}

// TimerIndexKey is the key that remembers when an instance's named timer
// fires, so that a timer can be replaced or cancelled by name.
func TimerIndexKey(id, name string) []byte {
	k := make([]byte, 0, 1+2+len(id)+len(name))
	k = append(k, KindTimerIndex)
	return appendIDName(k, id, name)
}

// InputOffsetKey is the key of the next offset to apply from an input topic.
func InputOffsetKey(topic string) []byte {
	k := make([]byte, 0, 1+len(topic))
	return append(append(k, KindInputOffset), topic...)
}

// ParkedKey is the key of an instance's parked event number seq (seq 0: the
// instance's parking head). The step runtime parks the events of an instance
// that has a dead letter, in order, until the dead letter is replayed or
// discarded.
func ParkedKey(id string, seq uint64) []byte {
	k := make([]byte, 0, 1+2+len(id)+8)
	k = append(k, KindParked)
	k = binary.BigEndian.AppendUint16(k, uint16(len(id)))
	k = append(k, id...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// TimersDue returns the key range [lower, upper) of the timers that fire at
// or before now.
func TimersDue(now time.Time) (lower, upper []byte) {
	upper = binary.BigEndian.AppendUint64([]byte{KindTimer}, fireTime(now)+1)
	return []byte{KindTimer}, upper
}

// ParseTimerKey returns the fire time, instance id and name of a timer key.
func ParseTimerKey(k []byte) (at time.Time, id, name string, err error) {
	if len(k) < 1+8+2 || k[0] != KindTimer {
		return time.Time{}, "", "", fmt.Errorf("%w: %q is not a timer key", ErrBadKey, k)
	}
	ns := binary.BigEndian.Uint64(k[1:9])
	id, name, err = parseIDName(k[9:])
	if err != nil {
		return time.Time{}, "", "", err
	}
	return time.Unix(0, int64(ns)).UTC(), id, name, nil
}

// ValidID reports whether id can be an instance id in a state key.
func ValidID(id string) error {
	if id == "" {
		return errors.New("instance id is empty (the record has no key)")
	}
	if len(id) > MaxInstanceIDLen {
		return fmt.Errorf("instance id is %d bytes, longer than the limit of %d", len(id), MaxInstanceIDLen)
	}
	return nil
}

func appendIDName(k []byte, id, name string) []byte {
	k = binary.BigEndian.AppendUint16(k, uint16(len(id)))
	return append(append(k, id...), name...)
}

func parseIDName(b []byte) (id, name string, err error) {
	if len(b) < 2 {
		return "", "", fmt.Errorf("%w: truncated instance id", ErrBadKey)
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", "", fmt.Errorf("%w: truncated instance id", ErrBadKey)
	}
	return string(b[2 : 2+n]), string(b[2+n:]), nil
}

// fireTime clamps t to what a timer key can hold: times before 1970 fire at
// once, which is what a timer in the past means anyway.
func fireTime(t time.Time) uint64 {
	ns := t.UnixNano()
	if ns < 0 || t.Before(time.Unix(0, 0)) {
		return 0
	}
	return uint64(ns)
}

// Database keys. A state key lives in the database under its partition:
//
//	p <u32 partition> <state key>    state, mirrored to the changelog
//	m <u32 partition> <name>         per-partition meta (changelog offset), local only
//
// The prefix keeps each partition a contiguous range, so a partition can be
// scanned, restored or dropped on its own.
const (
	prefixState byte = 'p'
	prefixMeta  byte = 'm'
)

const (
	metaChangelog = "changelog" // next changelog offset the partition's state reflects
	metaWritten   = "written"   // when it last caught up with the changelog (unix ns)
)

func dbKey(p int32, key []byte) []byte {
	k := make([]byte, 0, 5+len(key))
	k = append(k, prefixState)
	k = binary.BigEndian.AppendUint32(k, uint32(p))
	return append(k, key...)
}

func metaKey(p int32, name string) []byte {
	k := make([]byte, 0, 5+len(name))
	k = append(k, prefixMeta)
	k = binary.BigEndian.AppendUint32(k, uint32(p))
	return append(k, name...)
}

// partitionRange is the range [lower, upper) of p's state keys.
func partitionRange(p int32) (lower, upper []byte) {
	lower = binary.BigEndian.AppendUint32([]byte{prefixState}, uint32(p))
	upper = binary.BigEndian.AppendUint32([]byte{prefixState}, uint32(p)+1)
	if uint32(p) == math.MaxUint32 {
		upper = []byte{prefixState + 1}
	}
	return lower, upper
}

func metaRange(p int32) (lower, upper []byte) {
	lower = binary.BigEndian.AppendUint32([]byte{prefixMeta}, uint32(p))
	upper = binary.BigEndian.AppendUint32([]byte{prefixMeta}, uint32(p)+1)
	return lower, upper
}

// stateKey strips the partition prefix of a database key.
func stateKey(k []byte) []byte { return k[5:] }

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
