package dlq

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
)

// Provenance headers of a dead letter.
const (
	HeaderTopic     = "troupe_dlq_topic"
	HeaderPartition = "troupe_dlq_partition"
	HeaderOffset    = "troupe_dlq_offset"
	HeaderStep      = "troupe_dlq_step"
	HeaderError     = "troupe_dlq_error"
	HeaderAttempts  = "troupe_dlq_attempts"
	HeaderFailedAt  = "troupe_dlq_failed_at"
)

// Headers of records in a step's retry topic.
const (
	// HeaderReplayCount counts how often an event was replayed from a DLQ.
	HeaderReplayCount = "troupe_replay_count"
	// HeaderReplayedFromTopic, -Partition and -Offset name the dead letter
	// a replay or a discard marker was made from.
	HeaderReplayedFromTopic     = "troupe_replayed_from_topic"
	HeaderReplayedFromPartition = "troupe_replayed_from_partition"
	HeaderReplayedFromOffset    = "troupe_replayed_from_offset"
	// HeaderDiscard marks a discard marker ("true").
	HeaderDiscard = "troupe_discard"
	// HeaderDiscardEventID and HeaderDiscardEventType are the ce_id and
	// ce_type of the discarded event, when it had them.
	HeaderDiscardEventID   = "troupe_discard_event_id"
	HeaderDiscardEventType = "troupe_discard_event_type"
	// HeaderUnparked marks an event the step parked behind a dead letter
	// and wrote back to its retry topic when the instance was released; its
	// value is the event's place in the park.
	HeaderUnparked = "troupe_unparked"
)

// MaxErrorBytes bounds the troupe_dlq_error header: a panic's stack or a
// wrapped error chain must not make the dead letter too large to write.
const MaxErrorBytes = 4096

// Coordinates locate a record.
type Coordinates struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String renders c as topic/partition@offset.
func (c Coordinates) String() string { return fmt.Sprintf("%s/%d@%d", c.Topic, c.Partition, c.Offset) }

// Of returns the coordinates of r.
func Of(r *kgo.Record) Coordinates {
	return Coordinates{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
}

// ErrNotDeadLetter means a record lacks the provenance headers of a dead
// letter, or has malformed ones.
var ErrNotDeadLetter = errors.New("not a troupe dead letter")

// DeadLetter is a dead-letter record and what its headers say.
type DeadLetter struct {
	// Record is the dead-letter record as read from the DLQ: its Topic,
	// Partition and Offset are its place in the DLQ, its Key, Value and
	// Headers those of the failed record plus the provenance.
	Record *kgo.Record
	// Source is where the failed record was consumed from.
	Source   Coordinates
	Step     string
	Error    string
	Attempts int
	FailedAt time.Time
	// ReplayCount is how often the event had been replayed when it failed
	// this time (0 if it failed on first delivery).
	ReplayCount int
	// Event is the failed event's CloudEvents metadata (fields empty when
	// its headers lack them, e.g. for an undecodable record).
	Event event.Metadata
	// Malformed says why the record is not a well-formed dead letter
	// (wrapping ErrNotDeadLetter); nil when it is.
	Malformed error
}

// At is where the dead letter is in the DLQ.
func (d DeadLetter) At() Coordinates { return Of(d.Record) }

// NewDeadLetter returns the dead letter of rec, which step gave up on after
// attempts runs of its handler, the last failing with err, at time at. The
// key, value and headers of rec are kept (earlier troupe_dlq_* headers, from
// a replay that failed again, are replaced), and the provenance headers are
// added. The record's Partition is rec's, so an instance's dead letters stay
// on its partition number when produced with a partitioner that honours it
// (replay.KeepPartition); its Timestamp is at. Set Topic to the step's DLQ
// before producing.
//
// A dead letter always fits in MaxBytes, so that the producer never refuses
// it: when rec is too big, its value is cut, then its big headers, its
// small ones but the CloudEvents and replay headers, then its key. A
// troupe_dlq_cut header (HeaderCut) names each part cut with its size and
// SHA-256; the provenance headers always stay, so that Queue.Replay reads
// the cut parts back from the source record while its topic retains it.
func NewDeadLetter(rec *kgo.Record, step string, err error, attempts int, at time.Time) *kgo.Record {
	msg := ""
	if err != nil {
		msg = truncate(err.Error(), MaxErrorBytes)
	}
	h := keepHeaders(rec.Headers, isProvenance, 7)
	h = append(h,
		header(HeaderTopic, rec.Topic),
		header(HeaderPartition, strconv.FormatInt(int64(rec.Partition), 10)),
		header(HeaderOffset, strconv.FormatInt(rec.Offset, 10)),
		header(HeaderStep, step),
		header(HeaderError, msg),
		header(HeaderAttempts, strconv.Itoa(attempts)),
		header(HeaderFailedAt, at.UTC().Format(time.RFC3339Nano)),
	)
	return fit(&kgo.Record{Key: rec.Key, Value: rec.Value, Headers: h, Partition: rec.Partition, Timestamp: at}, MaxBytes)
}

// Parse reads the provenance of a dead-letter record. Missing or malformed
// provenance headers give an error wrapping ErrNotDeadLetter, together with
// the DeadLetter as far as it could be read (also in its Malformed field).
func Parse(rec *kgo.Record) (DeadLetter, error) {
	d := DeadLetter{Record: rec, Source: Coordinates{Partition: -1, Offset: -1}}
	var problems []string
	seen := map[string]bool{}
	for _, h := range rec.Headers {
		v := string(h.Value)
		var err error
		switch h.Key {
		case HeaderTopic:
			d.Source.Topic = v
		case HeaderPartition:
			var p int64
			p, err = strconv.ParseInt(v, 10, 32)
			d.Source.Partition = int32(p)
		case HeaderOffset:
			d.Source.Offset, err = strconv.ParseInt(v, 10, 64)
		case HeaderStep:
			d.Step = v
		case HeaderError:
			d.Error = v
		case HeaderAttempts:
			d.Attempts, err = strconv.Atoi(v)
		case HeaderFailedAt:
			d.FailedAt, err = time.Parse(time.RFC3339Nano, v)
		case HeaderReplayCount:
			d.ReplayCount, err = strconv.Atoi(v)
		default:
			continue
		}
		seen[h.Key] = true
		if err != nil {
			problems = append(problems, fmt.Sprintf("header %s=%q is malformed", h.Key, v))
		}
	}
	for _, k := range []string{HeaderTopic, HeaderPartition, HeaderOffset, HeaderStep, HeaderFailedAt} {
		if !seen[k] {
			problems = append(problems, "no "+k+" header")
		}
	}
	d.Event, _ = event.FromRecord(rec) // best effort: a bad ce_time leaves it empty
	if d.Event.IDDerived {
		// Event is what the headers say: without ce_id, no id (the id
		// FromRecord derives is not one the step compares dead letters by).
		d.Event.ID, d.Event.IDDerived = "", false
	}
	if len(problems) > 0 {
		d.Malformed = fmt.Errorf("%w: %s", ErrNotDeadLetter, strings.Join(problems, "; "))
	}
	return d, d.Malformed
}

// Replay returns the record that replays d into retryTopic: d's key, value
// and original headers without the troupe_dlq_* provenance, with
// troupe_replay_count incremented and troupe_replayed_from_* naming d in its
// DLQ. Its Partition is the failed record's (-1 when unknown: choose by key),
// its Timestamp zero (the time of the write).
func Replay(d DeadLetter, retryTopic string) *kgo.Record {
	h := keepHeaders(d.Record.Headers, func(k string) bool {
		return isProvenance(k) || k == HeaderReplayCount || isReplayedFrom(k)
	}, 4)
	h = append(h, header(HeaderReplayCount, strconv.Itoa(d.ReplayCount+1)))
	h = appendFrom(h, d.At())
	return &kgo.Record{Topic: retryTopic, Key: d.Record.Key, Value: d.Record.Value, Headers: h, Partition: d.Source.Partition}
}

// Discard returns the marker that discards d: sent to retryTopic, keyed by
// d's instance, with no value, so that the step releases the instance's
// parked events without running d's event.
func Discard(d DeadLetter, retryTopic string) *kgo.Record {
	h := []kgo.RecordHeader{header(HeaderDiscard, "true")}
	if d.Event.ID != "" {
		h = append(h, header(HeaderDiscardEventID, d.Event.ID))
	}
	if d.Event.Type != "" {
		h = append(h, header(HeaderDiscardEventType, d.Event.Type))
	}
	h = appendFrom(h, d.At())
	return &kgo.Record{Topic: retryTopic, Key: d.Record.Key, Headers: h, Partition: d.Source.Partition}
}

// Discarded is what a discard marker says.
type Discarded struct {
	Key       []byte // the instance whose parked events it releases
	EventID   string // ce_id of the discarded event; empty if it had none
	EventType string
	From      Coordinates // the dead letter it discards
}

// ParseDiscard reports whether rec (from a retry topic) is a discard marker,
// and what it says.
func ParseDiscard(rec *kgo.Record) (Discarded, bool) {
	if v, ok := event.Header(rec, HeaderDiscard); !ok || v != "true" {
		return Discarded{}, false
	}
	d := Discarded{Key: rec.Key}
	d.EventID, _ = event.Header(rec, HeaderDiscardEventID)
	d.EventType, _ = event.Header(rec, HeaderDiscardEventType)
	d.From, _ = ReplayedFrom(rec)
	return d, true
}

// ReplayCount is how often the event in rec was replayed from a DLQ: its
// troupe_replay_count, 0 when absent or malformed.
func ReplayCount(rec *kgo.Record) int {
	v, _ := event.Header(rec, HeaderReplayCount)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// ReplayedFrom returns the dead letter a retry-topic record (a replay or a
// discard marker) was made from, and whether it names one.
func ReplayedFrom(rec *kgo.Record) (Coordinates, bool) {
	t, ok1 := event.Header(rec, HeaderReplayedFromTopic)
	p, ok2 := event.Header(rec, HeaderReplayedFromPartition)
	o, ok3 := event.Header(rec, HeaderReplayedFromOffset)
	if !ok1 || !ok2 || !ok3 {
		return Coordinates{}, false
	}
	pn, err1 := strconv.ParseInt(p, 10, 32)
	on, err2 := strconv.ParseInt(o, 10, 64)
	if err1 != nil || err2 != nil {
		return Coordinates{}, false
	}
	return Coordinates{Topic: t, Partition: int32(pn), Offset: on}, true
}

// Settles reports whether rec, a record of a retry topic, replays or
// discards a dead letter, and which: from is its place in the DLQ. Events
// coming back from the park settle nothing, even when they are replays.
func Settles(rec *kgo.Record) (from Coordinates, discard, ok bool) {
	if _, unparked := event.Header(rec, HeaderUnparked); unparked {
		return Coordinates{}, false, false
	}
	if from, ok = ReplayedFrom(rec); !ok {
		return Coordinates{}, false, false
	}
	_, discard = ParseDiscard(rec)
	return from, discard, true
}

func appendFrom(h []kgo.RecordHeader, c Coordinates) []kgo.RecordHeader {
	return append(h,
		header(HeaderReplayedFromTopic, c.Topic),
		header(HeaderReplayedFromPartition, strconv.FormatInt(int64(c.Partition), 10)),
		header(HeaderReplayedFromOffset, strconv.FormatInt(c.Offset, 10)),
	)
}

func isProvenance(k string) bool { return strings.HasPrefix(k, "troupe_dlq_") }

func isReplayedFrom(k string) bool { return strings.HasPrefix(k, "troupe_replayed_from_") }

// keepHeaders copies the headers for which drop is false, with room for
// extra more.
func keepHeaders(hs []kgo.RecordHeader, drop func(string) bool, extra int) []kgo.RecordHeader {
	out := make([]kgo.RecordHeader, 0, len(hs)+extra)
	for _, h := range hs {
		if !drop(h.Key) {
			out = append(out, h)
		}
	}
	return out
}

func header(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…(truncated)"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
