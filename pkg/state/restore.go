package state

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/logging"
)

// Restorer brings partitions of a store up to date with the changelog.
type Restorer struct {
	// Kafka is how to reach the cluster.
	Kafka kafka.Config
	// Store is restored into.
	Store *Store
	// Topic is the changelog, <app>.<step>.changelog.
	Topic string
	// Logger gets a progress line every ProgressEvery (default 5 s).
	Logger        zerolog.Logger
	ProgressEvery time.Duration
	// SettleTimeout bounds the wait for a transaction still open on the
	// changelog partition (a previous owner that died mid-transaction) to
	// be committed or aborted; default 30 s, above the step's default
	// transaction timeout of 10 s.
	SettleTimeout time.Duration
	// OnRecords, if set, is called after each applied batch with the number
	// of records in it (for metrics).
	OnRecords func(n int)
	// MaxAge is how old a partition's state may be and still be caught up
	// from its offset; older, it is wiped and restored from the start.
	// Compaction removes a tombstone delete.retention.ms (default 24 h)
	// after it was written, and a store that missed the tombstone would
	// keep the deleted key (a fired timer, say) for ever. Default 12 h.
	MaxAge time.Duration
}

// Result says what one restore did.
type Result struct {
	Partition int32
	// From and To are the changelog offsets restored: [From, To).
	From, To int64
	Records  int64
	Took     time.Duration
	// Reset says why the partition was wiped and restored from the start,
	// "" if it continued from its stored offset.
	Reset string
}

const (
	restoreBatchRecords = 32 << 10
	restoreBatchBytes   = 16 << 20
	// restoreIdle is how long a restore waits for records it expects before
	// it concludes that compaction removed the tail of the range.
	restoreIdle = 10 * time.Second
)

// Restore consumes partition p of the changelog, read_committed, from the
// offset the store holds for p to the end, writing every record (a
// tombstone deletes) in large batches, each with the offset it reaches.
// The end is taken once no transaction is open on the partition: a
// transaction a previous owner committed just before it lost the partition
// must not be half-seen.
//
// If the stored offset is beyond the changelog's end or before its start
// (the topic was recreated or truncated), the partition is wiped and
// restored from the start.
func (r *Restorer) Restore(ctx context.Context, p int32) (Result, error) {
	res := Result{Partition: p}
	start := time.Now()
	log := r.Logger.With().Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, p).Logger()

	from, err := r.Store.ChangelogOffset(p)
	if err != nil {
		return res, fmt.Errorf("restore %s/%d: %w", r.Topic, p, err)
	}
	res.From = from
	cl, err := kafka.NewClient(ctx, r.Kafka,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // markers advance our position: see done below
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(32<<20),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return res, fmt.Errorf("restore %s/%d from offset %d: %w", r.Topic, p, from, err)
	}
	defer cl.Close()

	logStart, end, err := r.bounds(ctx, kadm.NewClient(cl), p, log)
	if err != nil {
		return res, fmt.Errorf("restore %s/%d from offset %d: %w", r.Topic, p, from, err)
	}
	maxAge := r.MaxAge
	if maxAge <= 0 {
		maxAge = 12 * time.Hour
	}
	written, err := r.Store.Written(p)
	if err != nil {
		return res, fmt.Errorf("restore %s/%d: %w", r.Topic, p, err)
	}
	switch {
	case from > 0 && from < end && !written.IsZero() && time.Since(written) > maxAge:
		res.Reset = fmt.Sprintf("state last caught up %s ago, longer than %s: tombstones written since may be compacted away", time.Since(written).Round(time.Minute), maxAge)
	case from > end:
		res.Reset = fmt.Sprintf("stored offset %d is beyond the changelog's end %d (topic recreated?)", from, end)
	case from > 0 && from < logStart:
		res.Reset = fmt.Sprintf("stored offset %d is before the changelog's start %d (records deleted)", from, logStart)
	}
	if res.Reset != "" {
		log.Warn().Str("reason", res.Reset).Msg("wiping partition state; restoring from the changelog's start")
		if err := r.Store.WipePartition(p); err != nil {
			return res, err
		}
		from = 0
	}
	from = max(from, logStart)
	res.From, res.To = from, end
	if from >= end {
		if err := r.setOffset(p, end); err != nil { // caught up as of now
			return res, err
		}
		res.Took = time.Since(start)
		return res, nil
	}

	log.Info().Int64("from", from).Int64("to", end).Msg("restoring state from the changelog")
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{r.Topic: {p: kgo.NewOffset().At(from)}})

	every := r.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	var (
		b        = r.Store.db.NewBatch()
		pos      = from // next offset to read
		lastLog  = time.Now()
		logged   int64
		lastData = time.Now()
	)
	defer func() { _ = b.Close() }()
	flush := func() error {
		if b.Empty() {
			return nil
		}
		n := int(b.Count())
		_ = b.Set(metaKey(p, metaChangelog), EncodeOffset(pos), nil)
		_ = b.Set(metaKey(p, metaWritten), EncodeOffset(time.Now().UnixNano()), nil)
		if err := b.Commit(r.Store.writeOpt); err != nil {
			return fmt.Errorf("restore %s/%d at offset %d: write state: %w", r.Topic, p, pos, err)
		}
		b.Reset()
		if r.OnRecords != nil {
			r.OnRecords(n)
		}
		return nil
	}

	for pos < end {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("restore %s/%d at offset %d of %d: %w", r.Topic, p, pos, end, err)
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			return res, fmt.Errorf("restore %s/%d at offset %d: %w", fe.Topic, fe.Partition, pos, fe.Err)
		}
		got := false
		var ferr error
		fs.EachRecord(func(rec *kgo.Record) {
			if ferr != nil || rec.Offset < pos || rec.Offset >= end {
				return
			}
			got = true
			pos = rec.Offset + 1
			if rec.Attrs.IsControl() {
				return
			}
			res.Records++
			if len(rec.Key) == 0 {
				ferr = fmt.Errorf("restore %s/%d: record at offset %d has no key", r.Topic, p, rec.Offset)
				return
			}
			if rec.Value == nil {
				_ = b.Delete(dbKey(p, rec.Key), nil)
			} else {
				_ = b.Set(dbKey(p, rec.Key), rec.Value, nil)
			}
			if b.Count() >= restoreBatchRecords || b.Len() >= restoreBatchBytes {
				ferr = flush()
			}
		})
		if ferr != nil {
			return res, ferr
		}
		now := time.Now()
		if got {
			lastData = now
		} else if now.Sub(lastData) > restoreIdle {
			// Nothing between pos and end is left to read: compaction
			// removed the tail (an aborted transaction's records and
			// then its marker).
			log.Warn().Int64("at", pos).Int64("end", end).Msg("no records before the end; assuming compaction removed them")
			pos = end
		}
		if now.Sub(lastLog) >= every {
			n := res.Records - logged
			rate := float64(n) / now.Sub(lastLog).Seconds()
			ev := log.Info().Int64("records", res.Records).Int64("records_per_s", int64(math.Round(rate))).Int64("offset", pos).Int64("end", end)
			if rate > 0 {
				ev = ev.Dur("eta", time.Duration(float64(end-pos)/rate*float64(time.Second)))
			}
			ev.Msg("restore progress")
			lastLog, logged = now, res.Records
		}
	}
	pos = end
	if err := flush(); err != nil {
		return res, err
	}
	if err := r.setOffset(p, end); err != nil { // markers only since the last batch
		return res, err
	}
	res.Took = time.Since(start)
	log.Info().Int64("records", res.Records).Dur("took", res.Took).
		Int64("records_per_s", int64(math.Round(float64(res.Records)/max(res.Took.Seconds(), 1e-9)))).Msg("restore done")
	return res, nil
}

func (r *Restorer) setOffset(p int32, off int64) error {
	b := r.Store.db.NewBatch()
	defer b.Close()
	_ = b.Set(metaKey(p, metaChangelog), EncodeOffset(off), nil)
	_ = b.Set(metaKey(p, metaWritten), EncodeOffset(time.Now().UnixNano()), nil)
	if err := b.Commit(r.Store.writeOpt); err != nil {
		return fmt.Errorf("restore %s/%d: write offset %d: %w", r.Topic, p, off, err)
	}
	return nil
}

// bounds returns the partition's log start offset and the end to restore
// to: the last stable offset, once it has caught up with the high-water mark
// (no open transaction), or after SettleTimeout.
func (r *Restorer) bounds(ctx context.Context, adm *kadm.Client, p int32, log zerolog.Logger) (start, end int64, err error) {
	starts, err := adm.ListStartOffsets(ctx, r.Topic)
	if err != nil {
		return 0, 0, fmt.Errorf("list start offsets: %w", err)
	}
	s, ok := starts.Lookup(r.Topic, p)
	if !ok || s.Err != nil {
		return 0, 0, fmt.Errorf("changelog partition not found (does topic %s exist with partition %d?): %v", r.Topic, p, s.Err)
	}
	settle := r.SettleTimeout
	if settle <= 0 {
		settle = 30 * time.Second
	}
	deadline := time.Now().Add(settle)
	for {
		hwms, err := adm.ListEndOffsets(ctx, r.Topic)
		if err != nil {
			return 0, 0, fmt.Errorf("list end offsets: %w", err)
		}
		lsos, err := adm.ListCommittedOffsets(ctx, r.Topic)
		if err != nil {
			return 0, 0, fmt.Errorf("list stable offsets: %w", err)
		}
		hwm, _ := hwms.Lookup(r.Topic, p)
		lso, _ := lsos.Lookup(r.Topic, p)
		if hwm.Err != nil || lso.Err != nil {
			return 0, 0, fmt.Errorf("list end offsets of partition %d: %w", p, errors.Join(hwm.Err, lso.Err))
		}
		if lso.Offset >= hwm.Offset {
			return s.Offset, hwm.Offset, nil
		}
		if time.Now().After(deadline) {
			log.Warn().Int64("stable", lso.Offset).Int64("high_water", hwm.Offset).Dur("waited", settle).
				Msg("a transaction is still open on the changelog; restoring up to the stable offset")
			return s.Offset, lso.Offset, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Partitions returns the number of partitions of the changelog topic, or an
// error naming the topic if it does not exist.
func (r *Restorer) Partitions(ctx context.Context) (int32, error) {
	cl, err := kafka.NewClient(ctx, r.Kafka)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, r.Topic)
	if err != nil {
		return 0, fmt.Errorf("describe changelog %s: %w", r.Topic, err)
	}
	td, ok := tds[r.Topic]
	if !ok || td.Err != nil {
		return 0, fmt.Errorf("changelog topic %s not found (check --app and --step, and that the step has run): %v", r.Topic, td.Err)
	}
	return int32(len(td.Partitions)), nil
}
