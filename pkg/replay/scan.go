package replay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
)

// ErrUnknownTopic means a topic does not exist in the cluster.
var ErrUnknownTopic = errors.New("topic does not exist")

// Start is where a range begins in every partition: an offset, or the first
// record at or after a time. The zero Start is offset 0: the beginning of
// each partition.
type Start struct {
	offset int64
	at     time.Time
}

// FromOffset starts at offset n in every partition (or at the partition's
// first offset, if n has been deleted by retention).
func FromOffset(n int64) Start { return Start{offset: n} }

// FromTime starts in every partition at the first record whose timestamp is
// at or after t.
func FromTime(t time.Time) Start { return Start{at: t} }

// Time returns the start time and whether s starts at a time.
func (s Start) Time() (time.Time, bool) { return s.at, !s.at.IsZero() }

// String is "from offset N" or "from <RFC 3339 time>".
func (s Start) String() string {
	if !s.at.IsZero() {
		return "from " + s.at.UTC().Format(time.RFC3339Nano)
	}
	return "from offset " + strconv.FormatInt(s.offset, 10)
}

// Span is the offsets [Start, End) of one partition.
type Span struct {
	Partition int32
	Start     int64
	End       int64
}

// Len is the number of offsets in s (records, transaction markers and
// aborted records).
func (s Span) Len() int64 { return max(0, s.End-s.Start) }

// String is "partition P: offsets A-B" or "partition P: empty".
func (s Span) String() string {
	if s.Len() == 0 {
		return fmt.Sprintf("partition %d: empty", s.Partition)
	}
	return fmt.Sprintf("partition %d: offsets %d-%d", s.Partition, s.Start, s.End-1)
}

// FormatSpans lists the spans that hold offsets, for error messages:
// "partition 0: offsets 0-9, partition 3: offsets 4-5", or "empty".
func FormatSpans(spans []Span) string {
	var parts []string
	for _, s := range spans {
		if s.Len() > 0 {
			parts = append(parts, s.String())
		}
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, ", ")
}

// Spans returns, for every partition of topic in partition order, the range
// from start to the partition's last stable offset: the end a read_committed
// reader sees now. A start before the log start (deleted by retention)
// becomes the log start; a start past the end becomes the end.
func Spans(ctx context.Context, adm *kadm.Client, topic string, from Start) ([]Span, error) {
	starts, err := listed(adm.ListStartOffsets(ctx, topic))
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	ends, err := listed(adm.ListCommittedOffsets(ctx, topic))
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	var byTime kadm.ListedOffsets
	if !from.at.IsZero() {
		if byTime, err = listed(adm.ListOffsetsAfterMilli(ctx, from.at.UnixMilli(), topic)); err != nil {
			return nil, fmt.Errorf("list offsets of %s %s: %w", topic, from, err)
		}
	}
	parts, ok := starts[topic]
	if !ok || len(parts) == 0 {
		return nil, fmt.Errorf("%s: %w", topic, ErrUnknownTopic)
	}
	spans := make([]Span, 0, len(parts))
	for p, lo := range parts {
		hi, ok := ends.Lookup(topic, p)
		if !ok {
			return nil, fmt.Errorf("list end offsets of %s: no answer for partition %d", topic, p)
		}
		s := Span{Partition: p, Start: lo.Offset, End: hi.Offset}
		if from.at.IsZero() {
			s.Start = max(s.Start, from.offset)
		} else if o, ok := byTime.Lookup(topic, p); ok && o.Offset >= 0 {
			s.Start = max(s.Start, o.Offset)
		} else {
			s.Start = s.End
		}
		s.Start = min(s.Start, s.End)
		spans = append(spans, s)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].Partition < spans[j].Partition })
	return spans, nil
}

// listed turns kadm's listing of offsets into one error: a missing topic
// wraps ErrUnknownTopic, other partition errors are joined.
func listed(l kadm.ListedOffsets, err error) (kadm.ListedOffsets, error) {
	if err != nil {
		return nil, err
	}
	var errs []error
	for topic, ps := range l {
		for p, o := range ps {
			switch {
			case o.Err == nil:
			case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
				return nil, fmt.Errorf("%s: %w", topic, ErrUnknownTopic)
			default:
				errs = append(errs, fmt.Errorf("%s/%d: %w", topic, p, o.Err))
			}
		}
	}
	return l, errors.Join(errs...)
}

// Partitions returns the number of partitions of topic, or an error wrapping
// ErrUnknownTopic.
func Partitions(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	d, ok := td[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return 0, fmt.Errorf("%s: %w", topic, ErrUnknownTopic)
	}
	if d.Err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, d.Err)
	}
	return len(d.Partitions), nil
}

// Scan calls fn with every record of topic in spans, in offset order within
// each partition, reading read_committed: aborted records and transaction
// markers are skipped. It returns when every span has been read, when fn
// returns an error (which Scan returns), or when ctx ends.
//
// An end that lies just after an aborted record whose abort marker is
// beyond it (two interleaved transactions) is only reached when a later
// offset becomes readable; Scan waits for it.
func Scan(ctx context.Context, cfg kafka.Config, topic string, spans []Span, fn func(*kgo.Record) error) error {
	end := make(map[int32]int64, len(spans))
	at := make(map[int32]kgo.Offset, len(spans))
	for _, s := range spans {
		if s.Len() > 0 {
			end[s.Partition] = s.End
			at[s.Partition] = kgo.NewOffset().At(s.Start)
		}
	}
	if len(end) == 0 {
		return nil
	}
	cl, err := kafka.NewClient(ctx, cfg,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: at}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Markers tell us when the end is reached even when the last
		// offsets of a span are not data records.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(end) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w (partitions not read to the end: %v)", topic, err, sortedKeys(end))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("read %s/%d: %w", t, p, err))
		})
		if ferr != nil {
			return ferr
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			e, ok := end[r.Partition]
			if !ok || r.Offset >= e {
				finish(cl, end, topic, r.Partition)
				continue
			}
			if !r.Attrs.IsControl() {
				if err := fn(r); err != nil {
					return err
				}
			}
			if r.Offset >= e-1 {
				finish(cl, end, topic, r.Partition)
			}
		}
	}
	return nil
}

func finish(cl *kgo.Client, end map[int32]int64, topic string, p int32) {
	if _, ok := end[p]; ok {
		delete(end, p)
		cl.RemoveConsumePartitions(map[string][]int32{topic: {p}})
	}
}

func sortedKeys(m map[int32]int64) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
