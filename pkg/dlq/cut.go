package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/replay"
)

// MaxBytes bounds the size of a dead letter as franz-go measures a record
// against ProducerBatchMaxBytes (key, value, header keys and values, plus
// their framing). franz-go refuses a record whose batch would exceed
// 1,000,012 bytes by default, and a dead letter it refuses aborts the
// step's transaction again at every attempt: one big record would stall
// every partition of the process. 990,000 leaves room for the batch header
// (61 bytes) and the record's framing.
const MaxBytes = 990_000

// replayBatchMaxBytes is the producer batch limit of replays: Kafka's
// default message.max.bytes (1,048,588), above franz-go's default, since a
// replay of a cut dead letter carries the original value again, which a
// producer with a larger limit than franz-go's may have written.
const replayBatchMaxBytes = 1_048_588

// HeaderCut names one part of the failed record that NewDeadLetter cut to
// make the dead letter fit in MaxBytes; its value is a Cut as JSON. A dead
// letter has one per part cut.
const HeaderCut = "troupe_dlq_cut"

// Parts of a record a Cut names.
const (
	CutValue   = "value"
	CutKey     = "key"
	CutHeader  = "header"  // one header, named by Cut.Name
	CutHeaders = "headers" // many small headers at once, Cut.Count of them
)

// Cut says what was cut from a dead letter: the part, its size, and the
// SHA-256 of its bytes (for CutHeaders, of each key and value in order,
// each followed by a zero byte), so that the original can be told apart
// from another record when it is read back from its source.
type Cut struct {
	Part   string `json:"part"`
	Name   string `json:"name,omitempty"`  // for CutHeader: the header's key (at most maxCutName bytes)
	Count  int    `json:"count,omitempty"` // for CutHeaders
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// String says what was cut: "value (1000000 bytes, sha256 3f2a…)".
func (c Cut) String() string {
	what := c.Part
	switch c.Part {
	case CutHeader:
		what = "header " + c.Name
	case CutHeaders:
		what = fmt.Sprintf("%d headers", c.Count)
	}
	return fmt.Sprintf("%s (%d bytes, sha256 %s)", what, c.Bytes, c.SHA256)
}

const (
	// recordFraming bounds the bytes a record adds to its key and value
	// (length, attributes, timestamp and offset deltas, key and value
	// lengths, header count, each a varint); headerFraming, the bytes a
	// header adds to its key and value.
	recordFraming = 36
	headerFraming = 10
	// cutWorth is the size from which cutting a header saves room: below,
	// the Cut header naming it is about as large.
	cutWorth = 512
	// maxCutName bounds a header key quoted in a Cut.
	maxCutName = 256
)

// essential headers are kept while they are small, even when the other
// small ones must go: the step parks and the coordinator records dead
// letters by them.
var essential = []string{"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_sagaid",
	"ce_causationid", "ce_correlationid", "content-type", "traceparent", HeaderReplayCount,
	HeaderReplayedFromTopic, HeaderReplayedFromPartition, HeaderReplayedFromOffset}

// RecordSize is r's size as franz-go measures it against
// ProducerBatchMaxBytes, within a few bytes: a record over MaxBytes is
// refused by the producer.
func RecordSize(r *kgo.Record) int {
	n := recordFraming + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += headerFraming + len(h.Key) + len(h.Value)
	}
	return n
}

func sum(b ...[]byte) string {
	h := sha256.New()
	for _, p := range b {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fit cuts dl, a dead letter built by NewDeadLetter, until it takes at most
// limit bytes: first the value, then the failed record's headers of
// cutWorth bytes or more (largest first), then its other headers except
// the first of each essential one, then the key. The provenance headers
// stay (the error is at most MaxErrorBytes already), and a HeaderCut header
// names each part cut. What the cut parts were can be read back from the
// source record (Queue.Replay does).
func fit(dl *kgo.Record, limit int) *kgo.Record {
	if RecordSize(dl) <= limit {
		return dl
	}
	var cuts []Cut
	if dl.Value != nil {
		cuts = append(cuts, Cut{Part: CutValue, Bytes: len(dl.Value), SHA256: sum(dl.Value)})
		dl.Value = nil
	}
	mark := func() []kgo.RecordHeader {
		out := make([]kgo.RecordHeader, 0, len(cuts))
		for _, c := range cuts {
			b, _ := json.Marshal(c)
			out = append(out, kgo.RecordHeader{Key: HeaderCut, Value: b})
		}
		return out
	}
	// The failed record's headers come first in dl, the provenance last.
	orig := slices.IndexFunc(dl.Headers, func(h kgo.RecordHeader) bool { return isProvenance(h.Key) })
	if orig < 0 {
		orig = len(dl.Headers)
	}
	kept, prov := slices.Clone(dl.Headers[:orig]), dl.Headers[orig:]
	size := func() int {
		n := recordFraming + len(dl.Key)
		for _, hs := range [][]kgo.RecordHeader{kept, prov, mark()} {
			for _, h := range hs {
				n += headerFraming + len(h.Key) + len(h.Value)
			}
		}
		return n
	}

	// Big headers, largest first.
	for size() > limit {
		i := -1
		for j, h := range kept {
			if n := len(h.Key) + len(h.Value); n >= cutWorth && (i < 0 || n > len(kept[i].Key)+len(kept[i].Value)) {
				i = j
			}
		}
		if i < 0 {
			break
		}
		h := kept[i]
		cuts = append(cuts, Cut{Part: CutHeader, Name: truncate(h.Key, maxCutName), Bytes: len(h.Value), SHA256: sum(h.Value)})
		kept = slices.Delete(kept, i, i+1)
	}
	// Many small headers: all but the first of each essential one.
	if size() > limit {
		if rest, c := cutSmall(kept); c.Count > 0 {
			cuts = append(cuts, c)
			kept = rest
		}
	}
	if size() > limit && dl.Key != nil {
		cuts = append(cuts, Cut{Part: CutKey, Bytes: len(dl.Key), SHA256: sum(dl.Key)})
		dl.Key = nil
	}
	dl.Headers = slices.Concat(kept, prov, mark())
	return dl
}

// cutSmall splits hs into the first header of each essential key, kept,
// and the others, described by the Cut returned.
func cutSmall(hs []kgo.RecordHeader) ([]kgo.RecordHeader, Cut) {
	var rest []kgo.RecordHeader
	seen := map[string]bool{}
	h := sha256.New()
	c := Cut{Part: CutHeaders}
	for _, x := range hs {
		if slices.Contains(essential, x.Key) && !seen[x.Key] {
			seen[x.Key] = true
			rest = append(rest, x)
			continue
		}
		h.Write([]byte(x.Key))
		h.Write([]byte{0})
		h.Write(x.Value)
		h.Write([]byte{0})
		c.Count++
		c.Bytes += len(x.Key) + len(x.Value)
	}
	c.SHA256 = hex.EncodeToString(h.Sum(nil))
	return rest, c
}

// Cuts returns what NewDeadLetter cut from d's record to make it fit (none
// for most dead letters).
func (d DeadLetter) Cuts() []Cut {
	var out []Cut
	for _, h := range d.Record.Headers {
		if h.Key != HeaderCut {
			continue
		}
		var c Cut
		if err := json.Unmarshal(h.Value, &c); err != nil {
			c = Cut{Part: "unknown (malformed " + HeaderCut + " header)"}
		}
		out = append(out, c)
	}
	return out
}

// ErrNotRetained means a cut dead letter's source record, which a replay
// needs to restore what was cut, is no longer in its topic.
var ErrNotRetained = errors.New("source record no longer retained")

// Uncut returns d with what NewDeadLetter cut put back, read from the
// source record at d.Source (read_committed). The source must still hold
// it, with the same SHA-256 for each part: else the error (wrapping
// ErrNotRetained when it is gone) names the coordinates. A dead letter
// without cuts is returned as it is.
func (q *Queue) Uncut(ctx context.Context, d DeadLetter) (DeadLetter, error) {
	cuts := d.Cuts()
	if len(cuts) == 0 {
		return d, nil
	}
	src := d.Source
	fail := func(format string, args ...any) (DeadLetter, error) {
		return d, fmt.Errorf("dead letter %s had its %s cut to fit the DLQ, and the original at %s partition %d offset %d "+format,
			append([]any{d.At(), cutList(cuts), src.Topic, src.Partition, src.Offset}, args...)...)
	}
	if src.Topic == "" || src.Partition < 0 || src.Offset < 0 {
		return fail("cannot be read: the provenance headers do not name it")
	}
	spans, err := replay.Spans(ctx, q.adm, src.Topic, replay.FromOffset(0))
	if err != nil {
		return fail("cannot be read: %w", err)
	}
	if int(src.Partition) >= len(spans) {
		return fail("is gone: %w (the topic has %d partitions)", ErrNotRetained, len(spans))
	}
	sp := spans[src.Partition]
	if src.Offset < sp.Start || src.Offset >= sp.End {
		return fail("is gone: %w (the topic now holds %s; discard the dead letter, or produce the event again by hand if you have it elsewhere)", ErrNotRetained, sp)
	}
	var orig *kgo.Record
	err = replay.Scan(ctx, q.cfg, src.Topic, []replay.Span{{Partition: src.Partition, Start: src.Offset, End: src.Offset + 1}}, func(r *kgo.Record) error {
		if r.Offset == src.Offset {
			orig = r
		}
		return nil
	})
	if err != nil {
		return fail("cannot be read: %w", err)
	}
	if orig == nil {
		return fail("is gone: %w (compacted, or not a committed record)", ErrNotRetained)
	}
	restored := *d.Record
	restored.Headers = slices.DeleteFunc(slices.Clone(d.Record.Headers), func(h kgo.RecordHeader) bool { return h.Key == HeaderCut })
	headersCut := false
	for _, c := range cuts {
		var got string
		switch c.Part {
		case CutValue:
			got, restored.Value = sum(orig.Value), orig.Value
		case CutKey:
			got, restored.Key = sum(orig.Key), orig.Key
		case CutHeader, CutHeaders:
			headersCut, got = true, c.SHA256 // checked below, all at once
		default:
			return fail("cannot be restored: the dead letter names an unknown cut %q", c.Part)
		}
		if got != c.SHA256 {
			return fail("holds another %s (sha256 %s, the dead letter names %s): was the topic recreated?", c.Part, got, c.SHA256)
		}
	}
	if headersCut {
		hs := slices.DeleteFunc(slices.Clone(orig.Headers), func(h kgo.RecordHeader) bool { return isProvenance(h.Key) })
		if !sameHeaders(hs, cuts) {
			return fail("holds other headers than those cut: was the topic recreated?")
		}
		// The original's headers, then the dead letter's provenance.
		restored.Headers = slices.Concat(hs, slices.DeleteFunc(restored.Headers, func(h kgo.RecordHeader) bool { return !isProvenance(h.Key) }))
	}
	d.Record = &restored
	return d, nil
}

// sameHeaders reports whether hs, a source record's headers, are those the
// cuts describe: each cut header among them, and the small ones cut
// together with the same hash.
func sameHeaders(hs []kgo.RecordHeader, cuts []Cut) bool {
	hs = slices.Clone(hs) // deleted from below
	for _, c := range cuts {
		if c.Part != CutHeader {
			continue
		}
		i := slices.IndexFunc(hs, func(h kgo.RecordHeader) bool {
			return truncate(h.Key, maxCutName) == c.Name && sum(h.Value) == c.SHA256
		})
		if i < 0 {
			return false
		}
		hs = slices.Delete(hs, i, i+1)
	}
	for _, c := range cuts {
		if c.Part == CutHeaders {
			if _, got := cutSmall(hs); got != c {
				return false
			}
		}
	}
	return true
}

func cutList(cuts []Cut) string {
	s := make([]string, len(cuts))
	for i, c := range cuts {
		s[i] = c.String()
	}
	return strings.Join(s, ", ")
}
