package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
)

// Range is a range of a topic to copy: from Start in every partition, to
// the current end, keeping only records timestamped before To when To is set.
type Range struct {
	Topic string
	From  Start
	// To, when not zero, ends the range: a record is copied only if its
	// timestamp is before To (and, when From is a time, at or after it).
	To time.Time
}

// String describes r for messages.
func (r Range) String() string {
	s := r.Topic + " " + r.From.String()
	if !r.To.IsZero() {
		s += " to " + r.To.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// CopyOptions tunes Copy. The zero value copies silently.
type CopyOptions struct {
	// Progress, if set, is called about every ProgressEvery while the copy
	// runs, from a goroutine of Copy's; never after Copy returns.
	Progress func(Progress)
	// ProgressEvery is the interval of Progress calls. Default 1s.
	ProgressEvery time.Duration
	// Create makes a missing target topic with the source's partition
	// count (so every record keeps its partition number) and the broker's
	// default configuration. By default a missing target is a
	// *MissingTargetError.
	Create bool
}

// MissingTargetError is a copy's target topic that does not exist. It wraps
// ErrUnknownTopic.
type MissingTargetError struct {
	Topic string
	// SourcePartitions is the partition count of the source: a target
	// created with it keeps every record's partition number.
	SourcePartitions int
}

func (e *MissingTargetError) Error() string {
	return fmt.Sprintf("target %s: %v", e.Topic, ErrUnknownTopic)
}

// Unwrap makes the error match ErrUnknownTopic.
func (e *MissingTargetError) Unwrap() error { return ErrUnknownTopic }

// Progress is how far a copy has come.
type Progress struct {
	Read    int64 // records read from the source range
	Copied  int64 // records the target acknowledged
	Elapsed time.Duration
}

// Rate is the copied records per second so far.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Copied) / p.Elapsed.Seconds()
}

// CopyResult is what a copy did.
type CopyResult struct {
	Progress
	// Skipped counts records read but outside the time range.
	Skipped int64
	// Spans are the offsets read from each source partition.
	Spans []Span
	// SamePartition is true when every record kept its partition number
	// (the target has as many partitions as the source); otherwise the
	// key chose the partition.
	SamePartition bool
	// Created is true when Copy created the target (CopyOptions.Create).
	Created bool
}

// Copy copies the records of r into the topic to, which must exist (or
// opts.Create be set). Every
// record keeps its key, value, headers and timestamp; it keeps its partition
// number when to has as many partitions as the source, and is otherwise
// placed by its key (Kafka's default murmur2 hash), so the records of one
// key stay together and in order.
//
// The range's end is fixed when Copy starts, so copying a topic into itself
// terminates. The producer is idempotent, so retries write no duplicates;
// but if Copy fails midway, a prefix of the range has been copied and
// running it again copies that prefix twice.
func Copy(ctx context.Context, cfg kafka.Config, r Range, to string, opts CopyOptions) (CopyResult, error) {
	var res CopyResult
	start := time.Now()
	cl, err := kafka.NewClient(ctx, cfg, kgo.RecordPartitioner(KeepPartition()))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	srcParts, err := Partitions(ctx, adm, r.Topic)
	if err != nil {
		return res, err
	}
	dstParts, err := Partitions(ctx, adm, to)
	if errors.Is(err, ErrUnknownTopic) && opts.Create {
		resp, cerr := adm.CreateTopic(ctx, int32(srcParts), -1, nil, to)
		if cerr == nil {
			cerr = resp.Err
		}
		if cerr != nil && !errors.Is(cerr, kerr.TopicAlreadyExists) {
			return res, fmt.Errorf("create target %s with %d partitions: %w", to, srcParts, cerr)
		}
		res.Created = true
		dstParts, err = srcParts, nil
	}
	if errors.Is(err, ErrUnknownTopic) {
		return res, &MissingTargetError{Topic: to, SourcePartitions: srcParts}
	}
	if err != nil {
		return res, fmt.Errorf("target: %w", err)
	}
	res.SamePartition = srcParts == dstParts
	if res.Spans, err = Spans(ctx, adm, r.Topic, r.From); err != nil {
		return res, err
	}
	from, fromTime := r.From.Time()

	var (
		read, copied, skipped atomic.Int64
		errMu                 sync.Mutex
		produceErr            error
	)
	firstErr := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return produceErr
	}
	progress := func() Progress {
		return Progress{Read: read.Load(), Copied: copied.Load(), Elapsed: time.Since(start)}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	if opts.Progress != nil {
		every := opts.ProgressEvery
		if every <= 0 {
			every = time.Second
		}
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					opts.Progress(progress())
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	err = Scan(ctx, cfg, r.Topic, res.Spans, func(rec *kgo.Record) error {
		read.Add(1)
		if (fromTime && rec.Timestamp.Before(from)) || (!r.To.IsZero() && !rec.Timestamp.Before(r.To)) {
			skipped.Add(1)
			return nil
		}
		if err := firstErr(); err != nil {
			return err
		}
		out := &kgo.Record{
			Topic:     to,
			Key:       rec.Key,
			Value:     rec.Value,
			Headers:   rec.Headers,
			Timestamp: rec.Timestamp,
			Partition: -1,
		}
		if res.SamePartition {
			out.Partition = rec.Partition
		}
		cl.Produce(ctx, out, func(out *kgo.Record, err error) {
			if err != nil {
				errMu.Lock()
				if produceErr == nil {
					produceErr = fmt.Errorf("write to %s (record from %s/%d@%d): %w", to, rec.Topic, rec.Partition, rec.Offset, err)
				}
				errMu.Unlock()
				return
			}
			copied.Add(1)
		})
		return nil
	})
	if ferr := cl.Flush(ctx); err == nil && ferr != nil {
		err = fmt.Errorf("flush writes to %s: %w", to, ferr)
	}
	err = errors.Join(err, firstErr())
	res.Progress = progress()
	res.Skipped = skipped.Load()
	if err != nil {
		return res, fmt.Errorf("copy %s to %s: %w (%d records copied before the failure)", r, to, err, res.Copied)
	}
	return res, nil
}

// KeepPartition returns a partitioner that writes a record to its Partition
// when the topic has that partition, and otherwise (Partition -1, or beyond
// the topic's partitions) hashes its key as Kafka's default partitioner does
// (murmur2), so that the records of one key stay together in order. Keyless
// records without a usable partition go round robin.
func KeepPartition() kgo.Partitioner { return keepPartition{} }

type keepPartition struct{}

func (keepPartition) ForTopic(topic string) kgo.TopicPartitioner {
	return &keepTopicPartition{byKey: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

type keepTopicPartition struct {
	byKey kgo.TopicPartitioner
	next  int // round robin for keyless records
}

func (p *keepTopicPartition) RequiresConsistency(r *kgo.Record) bool {
	return r.Partition >= 0 || r.Key != nil
}

func (p *keepTopicPartition) Partition(r *kgo.Record, n int) int {
	switch {
	case r.Partition >= 0 && int(r.Partition) < n:
		return int(r.Partition)
	case r.Key != nil:
		return p.byKey.Partition(r, n)
	default:
		p.next = (p.next + 1) % n
		return p.next
	}
}
