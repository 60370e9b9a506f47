package dlq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
)

// ErrEmpty means the dead-letter topic holds no records.
var ErrEmpty = errors.New("dead-letter topic is empty")

// Queue is one step's dead-letter topic and the retry topic its replays and
// discards go to. It is not safe for concurrent use.
type Queue struct {
	Step       string
	Topic      string // <app>.<step>.dlq
	RetryTopic string // <app>.<step>.retry

	cfg  kafka.Config
	cl   *kgo.Client // admin requests and, when sending, produce
	adm  *kadm.Client
	prod *kgo.Client
}

// Open connects to the cluster of cfg and checks that the dead-letter topic
// exists (an error wrapping replay.ErrUnknownTopic if not).
func Open(ctx context.Context, cfg kafka.Config, step, topic, retryTopic string) (*Queue, error) {
	cl, err := kafka.NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	q := &Queue{Step: step, Topic: topic, RetryTopic: retryTopic, cfg: cfg, cl: cl, adm: kadm.NewClient(cl)}
	if _, err := replay.Partitions(ctx, q.adm, topic); err != nil {
		cl.Close()
		return nil, fmt.Errorf("dead-letter topic of step %s: %w", step, err)
	}
	return q, nil
}

// Close releases the connections.
func (q *Queue) Close() {
	if q.prod != nil {
		q.prod.Close()
	}
	q.cl.Close()
}

// Selection chooses dead letters. The zero Selection is All.
type Selection struct {
	byOffset  bool
	partition int32
	offset    int64
	since     time.Time
}

// All selects every dead letter.
func All() Selection { return Selection{} }

// At selects the dead letter at offset in partition; partition -1 means
// whichever partition holds the offset (an error if several do).
func At(partition int32, offset int64) Selection {
	return Selection{byOffset: true, partition: partition, offset: offset}
}

// Since selects the dead letters that failed at or after t.
func Since(t time.Time) Selection { return Selection{since: t} }

// String describes s for messages: "all", "offset 3", "since ...".
func (s Selection) String() string {
	switch {
	case s.byOffset && s.partition >= 0:
		return fmt.Sprintf("partition %d offset %d", s.partition, s.offset)
	case s.byOffset:
		return fmt.Sprintf("offset %d", s.offset)
	case !s.since.IsZero():
		return "since " + s.since.UTC().Format(time.RFC3339)
	}
	return "all"
}

// OffsetError says why a selected offset holds no dead letter.
type OffsetError struct {
	Topic     string
	Partition int32 // -1 when the selection named none
	Offset    int64
	// Spans are the offsets each partition holds.
	Spans []replay.Span
	// Partitions lists the partitions that hold the offset when the
	// selection named none and several do.
	Partitions []int32
	// NotRecord is true when the offset is in range but holds a
	// transaction marker or an aborted write.
	NotRecord bool
}

// Error says what the topic holds instead.
func (e *OffsetError) Error() string {
	switch {
	case e.NotRecord:
		return fmt.Sprintf("offset %d of %s partition %d is a transaction marker or an aborted write, not a dead letter", e.Offset, e.Topic, e.Partition)
	case len(e.Partitions) > 1:
		return fmt.Sprintf("offset %d is in partitions %s of %s: say which partition", e.Offset, joinInts(e.Partitions), e.Topic)
	case e.empty():
		return fmt.Sprintf("no offset %d: %s is empty", e.Offset, e.Topic)
	case e.Partition >= int32(len(e.Spans)):
		return fmt.Sprintf("%s has no partition %d (it has partitions 0-%d)", e.Topic, e.Partition, len(e.Spans)-1)
	case e.Partition >= 0 && e.Spans[e.Partition].Len() == 0:
		return fmt.Sprintf("offset %d is not in %s partition %d, which is empty (%s holds %s)", e.Offset, e.Topic, e.Partition, e.Topic, replay.FormatSpans(e.Spans))
	case e.Partition >= 0:
		s := e.Spans[e.Partition]
		return fmt.Sprintf("offset %d is not in %s partition %d, which holds offsets %d-%d", e.Offset, e.Topic, e.Partition, s.Start, s.End-1)
	}
	return fmt.Sprintf("offset %d is not in %s (it holds %s)", e.Offset, e.Topic, replay.FormatSpans(e.Spans))
}

// Unwrap makes an OffsetError on an empty topic match ErrEmpty.
func (e *OffsetError) Unwrap() error {
	if e.empty() {
		return ErrEmpty
	}
	return nil
}

func (e *OffsetError) empty() bool { return replay.FormatSpans(e.Spans) == "empty" }

// Spans returns the offsets each partition of the DLQ holds now.
func (q *Queue) Spans(ctx context.Context) ([]replay.Span, error) {
	return replay.Spans(ctx, q.adm, q.Topic, replay.FromOffset(0))
}

// Scan calls fn with each selected dead letter, in offset order within each
// partition, reading read_committed up to the end as Scan starts. A record
// that is not a well-formed dead letter is passed too, with Malformed set.
// Selecting an offset that holds no dead letter returns an *OffsetError.
func (q *Queue) Scan(ctx context.Context, sel Selection, fn func(DeadLetter) error) error {
	from := replay.FromOffset(0)
	if !sel.since.IsZero() {
		from = replay.FromTime(sel.since)
	}
	spans, err := replay.Spans(ctx, q.adm, q.Topic, from)
	if err != nil {
		return err
	}
	if sel.byOffset {
		return q.scanOffset(ctx, spans, sel, fn)
	}
	return replay.Scan(ctx, q.cfg, q.Topic, spans, func(r *kgo.Record) error {
		d, _ := Parse(r)
		if !sel.since.IsZero() {
			failed := d.FailedAt
			if failed.IsZero() {
				failed = r.Timestamp
			}
			if failed.Before(sel.since) {
				return nil
			}
		}
		return fn(d)
	})
}

func (q *Queue) scanOffset(ctx context.Context, spans []replay.Span, sel Selection, fn func(DeadLetter) error) error {
	oe := &OffsetError{Topic: q.Topic, Partition: sel.partition, Offset: sel.offset, Spans: spans}
	in := func(s replay.Span) bool { return s.Start <= sel.offset && sel.offset < s.End }
	var span replay.Span
	if sel.partition >= 0 {
		if int(sel.partition) >= len(spans) || !in(spans[sel.partition]) {
			return oe
		}
		span = spans[sel.partition]
	} else {
		for _, s := range spans {
			if in(s) {
				oe.Partitions = append(oe.Partitions, s.Partition)
				span = s
			}
		}
		if len(oe.Partitions) != 1 {
			return oe
		}
		oe.Partition = span.Partition
	}
	span.Start, span.End = sel.offset, sel.offset+1
	found := false
	err := replay.Scan(ctx, q.cfg, q.Topic, []replay.Span{span}, func(r *kgo.Record) error {
		found = true
		d, _ := Parse(r)
		return fn(d)
	})
	if err == nil && !found {
		oe.NotRecord = true
		return oe
	}
	return err
}

// Get returns the dead letter at offset in partition (-1: whichever
// partition holds it).
func (q *Queue) Get(ctx context.Context, partition int32, offset int64) (DeadLetter, error) {
	var d DeadLetter
	err := q.Scan(ctx, At(partition, offset), func(x DeadLetter) error { d = x; return nil })
	return d, err
}

// SendOptions tunes Replay and Discard. The zero value sends as fast as the
// broker acknowledges.
type SendOptions struct {
	// DryRun selects and builds the records but writes nothing.
	DryRun bool
	// Rate limits the records written per second; 0 is no limit.
	Rate float64
	// OnSent, if set, is called for each dead letter once its record is
	// acknowledged (in a dry run: built), in the order they were read. sent
	// has its Partition and, unless a dry run, Offset in the retry topic.
	OnSent func(d DeadLetter, sent *kgo.Record)
	// Force sends for dead letters that are settled already (replayed or
	// discarded) too. By default a dead letter is settled once: a
	// selection of several skips the settled ones (OnSkipped), and
	// selecting one by offset returns a *SettledError.
	Force bool
	// OnSkipped, if set, is called for each selected dead letter skipped
	// because it is settled already, with what settled it.
	OnSkipped func(d DeadLetter, o Outcome)
}

// ErrSettled means a dead letter was replayed or discarded already.
var ErrSettled = errors.New("dead letter settled already")

// SettledError is a dead letter selected by its offset that a replay or a
// discard has settled already. It wraps ErrSettled.
type SettledError struct {
	At      Coordinates
	Outcome Outcome
}

// Error says what settled the dead letter and when.
func (e *SettledError) Error() string {
	return fmt.Sprintf("dead letter %d@%d of %s is settled already: %s at %s",
		e.At.Partition, e.At.Offset, e.At.Topic, e.Outcome, e.Outcome.Last.UTC().Format(time.RFC3339))
}

// Unwrap makes the error match ErrSettled.
func (e *SettledError) Unwrap() error { return ErrSettled }

// Replay writes a replay of each selected dead letter that is not settled
// yet (or every selected one with opts.Force) to the retry topic (see the
// package doc) and returns how many it wrote. A replay that fails again is
// a new dead letter, at a new offset, outstanding in turn. Forced replays
// are safe: the step deduplicates events by ce_id.
func (q *Queue) Replay(ctx context.Context, sel Selection, opts SendOptions) (int, error) {
	return q.send(ctx, sel, opts, "replay", Replay)
}

// Discard writes a discard marker for each selected dead letter that is not
// settled yet (or every selected one with opts.Force) to the retry topic
// and returns how many it wrote.
func (q *Queue) Discard(ctx context.Context, sel Selection, opts SendOptions) (int, error) {
	return q.send(ctx, sel, opts, "discard", Discard)
}

type pending struct {
	d   DeadLetter
	rec *kgo.Record
}

func (q *Queue) send(ctx context.Context, sel Selection, opts SendOptions, verb string, build func(DeadLetter, string) *kgo.Record) (int, error) {
	if _, err := replay.Partitions(ctx, q.adm, q.RetryTopic); err != nil {
		return 0, fmt.Errorf("retry topic of step %s: %w", q.Step, err)
	}
	if !opts.DryRun && q.prod == nil {
		// Idempotent (franz-go's default): a retried write is not
		// duplicated. A transaction would add nothing: each record is
		// independent, and a replay that is repeated is deduplicated.
		p, err := kafka.NewClient(ctx, q.cfg, kgo.RecordPartitioner(replay.KeepPartition()),
			kgo.ProducerBatchMaxBytes(replayBatchMaxBytes)) // a dead letter's value read back (Uncut) may exceed franz-go's default
		if err != nil {
			return 0, err
		}
		q.prod = p
	}
	var settled map[Coordinates]Outcome
	if !opts.Force {
		var err error
		if settled, err = q.Outcomes(ctx); err != nil {
			return 0, fmt.Errorf("read %s to skip settled dead letters: %w", q.RetryTopic, err)
		}
	}
	size := 500
	if opts.Rate > 0 {
		size = max(1, min(size, int(math.Ceil(opts.Rate/10))))
	}
	start := time.Now()
	sent := 0
	var batch []pending
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if opts.Rate > 0 {
			due := start.Add(time.Duration(float64(sent) / opts.Rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if !opts.DryRun {
			recs := make([]*kgo.Record, len(batch))
			for i, p := range batch {
				recs[i] = p.rec
			}
			res := q.prod.ProduceSync(ctx, recs...)
			for i, r := range res {
				if r.Err != nil {
					return fmt.Errorf("%s %s into %s: %w", verb, batch[i].d.At(), q.RetryTopic, r.Err)
				}
			}
		}
		for _, p := range batch {
			sent++
			if opts.OnSent != nil {
				opts.OnSent(p.d, p.rec)
			}
		}
		batch = batch[:0]
		return nil
	}
	err := q.Scan(ctx, sel, func(d DeadLetter) error {
		if o := settled[d.At()]; o.Settled() {
			if sel.byOffset {
				return &SettledError{At: d.At(), Outcome: o}
			}
			if opts.OnSkipped != nil {
				opts.OnSkipped(d, o)
			}
			return nil
		}
		if verb == "replay" {
			var err error
			if d, err = q.Uncut(ctx, d); err != nil { // the parts cut to fit the DLQ, from the source
				return err
			}
		}
		batch = append(batch, pending{d, build(d, q.RetryTopic)})
		if len(batch) >= size {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil && sent > 0 {
		err = fmt.Errorf("%w (%d records written before the failure)", err, sent)
	}
	return sent, err
}

// Outcome is what happened to a dead letter since it was written, as its
// step's retry topic records it.
type Outcome struct {
	Replays   int       // replays written
	Discarded bool      // a discard marker was written
	Last      time.Time // time of the last replay or discard
}

// Settled reports whether the dead letter was replayed or discarded.
func (o Outcome) Settled() bool { return o.Replays > 0 || o.Discarded }

// String is "replayed", "replayed 2x", "discarded", both, or "-".
func (o Outcome) String() string {
	var parts []string
	switch {
	case o.Replays == 1:
		parts = append(parts, "replayed")
	case o.Replays > 1:
		parts = append(parts, fmt.Sprintf("replayed %dx", o.Replays))
	}
	if o.Discarded {
		parts = append(parts, "discarded")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// Outcomes reads the retry topic and returns, by their place in the DLQ,
// the dead letters that were replayed or discarded. A missing retry topic
// gives an empty map.
func (q *Queue) Outcomes(ctx context.Context) (map[Coordinates]Outcome, error) {
	out := map[Coordinates]Outcome{}
	spans, err := replay.Spans(ctx, q.adm, q.RetryTopic, replay.FromOffset(0))
	if errors.Is(err, replay.ErrUnknownTopic) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	err = replay.Scan(ctx, q.cfg, q.RetryTopic, spans, func(r *kgo.Record) error {
		from, discard, ok := Settles(r)
		if !ok || from.Topic != q.Topic {
			return nil
		}
		o := out[from]
		if discard {
			o.Discarded = true
		} else {
			o.Replays++
		}
		o.Last = r.Timestamp
		out[from] = o
		return nil
	})
	return out, err
}

func joinInts(ps []int32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}
