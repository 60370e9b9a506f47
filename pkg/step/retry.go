package step

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
)

// RetryPolicy says how a step retries a record whose handler fails, and what
// it does when it gives up (README: Writing a step). The zero value is the default
// policy: 5 attempts, backoff from 100 ms doubling up to 5 s, 20% jitter,
// then a dead letter.
//
// A failing record is retried in place: its partition pauses at the record
// for the backoff (its other records wait behind it, in order), while the
// step's other partitions go on and commit. A handler marks an error that a
// retry cannot fix with Permanent; such an error, a panic, and a record that
// cannot be decoded skip the retries.
//
// After the last attempt the record goes to the step's dead-letter topic,
// <app>.<step>.dlq (see package dlq for its headers), in the same
// transaction as the rest of the interval, and the partition moves on. The
// record's instance is then blocked: its later events are parked in the
// state store, in order, until the dead letter is replayed (and succeeds) or
// discarded (`troupe dlq replay|discard`), and then they run in their
// original order. Other instances of the partition are not held up.
type RetryPolicy struct {
	// Attempts is how many times the handler runs for one record before the
	// record is dead-lettered, the first run included. Default 5; 1 means no
	// retries.
	Attempts int
	// InitialBackoff is the wait before the first retry; each later retry
	// waits twice as long as the one before, up to MaxBackoff. Default
	// 100 ms. A wait shorter than the commit interval lasts one interval.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between two attempts. Default 5 s.
	MaxBackoff time.Duration
	// Jitter is the fraction of each wait drawn at random: a wait d becomes
	// a uniform draw from [d*(1-Jitter), d], so that records failing
	// together (a dependency down) do not retry in lockstep. Default 0.2;
	// a negative value means none.
	Jitter float64
	// StopPartition, when set, stops the record's partition after the last
	// attempt instead of writing a dead letter: the record is never skipped
	// and the partition waits for a restart or a rebalance (Runtime.Ready
	// says which partition and why). For steps where one failure must hold
	// back everything behind it, not just its instance.
	StopPartition bool
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts == 0 {
		p.Attempts = 5
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = 100 * time.Millisecond
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = 5 * time.Second
	}
	if p.Jitter == 0 {
		p.Jitter = 0.2
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	return p
}

func (p RetryPolicy) validate() error {
	var errs []error
	if p.Attempts < 0 {
		errs = append(errs, fmt.Errorf("retry attempts %d is negative (1 means no retries)", p.Attempts))
	}
	if p.InitialBackoff < 0 || p.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("retry backoffs must not be negative (initial %s, max %s)", p.InitialBackoff, p.MaxBackoff))
	}
	if d := p.withDefaults(); d.InitialBackoff > d.MaxBackoff {
		errs = append(errs, fmt.Errorf("retry initial backoff %s is longer than the max backoff %s", d.InitialBackoff, d.MaxBackoff))
	}
	if p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("retry jitter %g is above 1 (it is a fraction of the wait)", p.Jitter))
	}
	return errors.Join(errs...)
}

// Backoff is the wait after the attempt-th failed attempt (1-based), before
// jitter: InitialBackoff doubled attempt-1 times, at most MaxBackoff.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// retryState is what a task knows about its failing records, owned by the
// loop. It is not state: after a restart or a rebalance a record's attempts
// count from 1 again.
type retryState struct {
	// attempts are the failed attempts of each record being retried.
	attempts map[recordPlace]int
	// held: the partition's fetching is paused until holdUntil.
	held      bool
	holdUntil time.Time
}

// jittered is wait d with the jitter of p (a policy with its defaults): a
// uniform draw from [d*(1-Jitter), d].
func (p RetryPolicy) jittered(d time.Duration) time.Duration {
	if p.Jitter > 0 {
		d -= time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return d
}

// hold stops t's partition for the rest of the interval and pauses its
// fetching until until (at least): its records not settled are fetched
// again when the hold ends (see Runtime.resumeHeld).
func (c *cycle) hold(tc *taskCycle, until time.Time) {
	tc.stopped = true
	t := tc.t
	if !t.retry.held || until.After(t.retry.holdUntil) {
		t.retry.holdUntil = until
	}
	if !t.retry.held {
		t.retry.held = true
		c.rt.cl.PauseFetchPartitions(c.rt.tps(t.p))
	}
}

// rewinds are the offsets the partitions that stopped in this interval must
// commit and fetch from again: the first record of each topic they did not
// handle.
func (c *cycle) rewinds() map[string]map[int32]kgo.EpochOffset {
	var out map[string]map[int32]kgo.EpochOffset
	for p, tc := range c.tasks {
		for topic := range tc.inputs {
			if _, eo, rewind := tc.progress(topic); rewind {
				out = putOffset(out, topic, p, eo)
			}
		}
	}
	return out
}

// putOffset sets m[topic][p] to eo, making the maps it needs, and returns
// m.
func putOffset(m map[string]map[int32]kgo.EpochOffset, topic string, p int32, eo kgo.EpochOffset) map[string]map[int32]kgo.EpochOffset {
	if m == nil {
		m = make(map[string]map[int32]kgo.EpochOffset)
	}
	if m[topic] == nil {
		m[topic] = make(map[int32]kgo.EpochOffset)
	}
	m[topic][p] = eo
	return m
}

// commitContext shapes the offsets the transaction commits. A partition
// held in this interval commits the offsets it reached, not those it was
// polled to: the session commits the position of the last record polled,
// and a partition that stopped at a failing record was polled past it;
// committing that would lose the record and those after it if this process
// died during the backoff. An interval that polled nothing commits fence
// (its partitions' committed offsets again) instead of nothing.
func (c *cycle) commitContext(ctx context.Context, fence map[string]map[int32]kgo.EpochOffset) context.Context {
	rw := c.rewinds()
	if len(rw) == 0 && len(fence) == 0 {
		return ctx
	}
	return kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		if len(req.Topics) == 0 {
			for topic, ps := range fence {
				rt := kmsg.NewTxnOffsetCommitRequestTopic()
				rt.Topic, rt.TopicID = topic, c.rt.topicIDs[topic]
				for p, eo := range ps {
					rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
					rp.Partition, rp.Offset, rp.LeaderEpoch = p, eo.Offset, eo.Epoch
					rp.Metadata = &req.MemberID
					rt.Partitions = append(rt.Partitions, rp)
				}
				req.Topics = append(req.Topics, rt)
			}
		}
		for i := range req.Topics {
			ps := rw[req.Topics[i].Topic]
			for j := range req.Topics[i].Partitions {
				rp := &req.Topics[i].Partitions[j]
				if eo, ok := ps[rp.Partition]; ok {
					rp.Offset, rp.LeaderEpoch = eo.Offset, eo.Epoch
				}
			}
		}
		return nil
	})
}

// fenceOffsets are the committed offsets of the partitions this interval
// wrote to, for a transaction that polled nothing to commit again. Only a
// TxnOffsetCommit has the broker check that this member still belongs to
// the group's generation (KIP-447); a transaction without one commits
// whatever its member thinks it owns. A process paused past its session
// timeout, or cut off from the group coordinator alone, would go on firing
// the timers of partitions another member now owns and commit them: the
// coordinator re-sending a compensation the new owner has moved past, an
// old state written over the new one. With the offsets, the broker refuses
// it (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) and the transaction aborts;
// and a new owner's offset fetch waits for a transaction that did commit
// them (RequireStable), so it sees what that transaction did.
func (c *cycle) fenceOffsets() map[string]map[int32]kgo.EpochOffset {
	committed := c.rt.cl.CommittedOffsets()
	var out map[string]map[int32]kgo.EpochOffset
	for p := range c.tasks {
		for _, topic := range c.rt.topics {
			if eo, ok := committed[topic][p]; ok {
				out = putOffset(out, topic, p, eo)
			}
		}
	}
	return out
}

// rewindFetch, once the interval committed, moves the consumer of each
// partition that stopped (held for a retry, or stopped for good) back to
// its first record not handled; the records of the other partitions left
// unsettled (admission ended before they started) are carried over to the
// next interval instead (Runtime.carry), which saves fetching them again.
// Loop only, between intervals (under at-least-once, before rebalances are
// allowed again).
func (c *cycle) rewindFetch() {
	rw := c.rewinds()
	c.rt.carry = c.rt.carry[:0]
	for p, tc := range c.tasks {
		if tc.stopped {
			continue
		}
		for topic, in := range tc.inputs {
			delete(rw[topic], p)
			for i, r := range in.recs {
				if !in.settled[i] {
					c.rt.carry = append(c.rt.carry, carried{t: tc.t, r: r})
				}
			}
		}
	}
	for topic, ps := range rw {
		if len(ps) == 0 {
			delete(rw, topic)
		}
	}
	if len(rw) > 0 {
		c.rt.cl.SetOffsets(rw)
	}
}

// resumeHeld resumes fetching the partitions whose backoff has passed.
// Loop only.
func (rt *Runtime) resumeHeld(now time.Time) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, t := range rt.tasks {
		if t.retry.held && !now.Before(t.retry.holdUntil) && t.state.Load() == taskActive {
			t.retry.held = false
			rt.cl.ResumeFetchPartitions(rt.tps(t.p))
		}
	}
}

// deadLetter writes r to the step's DLQ, in this interval's transaction, on
// the partition r had; moves the partition past r; and blocks r's instance,
// so that its later events are parked until the dead letter is replayed or
// discarded.
func (c *cycle) deadLetter(tc *taskCycle, r *kgo.Record, id string, re *RecordError) error {
	rt := c.rt
	now := time.Now()
	src := *r
	src.Headers = withoutHeader(r.Headers, dlq.HeaderUnparked)
	dl := dlq.NewDeadLetter(&src, rt.def.name, re.Err, re.Attempts, now)
	dl.Topic = rt.def.dlq()
	rt.cl.Produce(c.pctx, dl, c.promise)
	rt.m.deadLetters.Inc()
	c.work++

	blocked := false
	if id != "" {
		if err := c.block(tc, r, id, now); err != nil {
			return err
		}
		blocked = true
	}
	rt.log.Error().Err(re.Err).Str(logging.FieldSaga, id).Str(logging.FieldTopic, r.Topic).
		Int32(logging.FieldPartition, r.Partition).Int64(logging.FieldOffset, r.Offset).
		Int("attempts", re.Attempts).Bool("permanent", IsPermanent(re.Err)).Str("dlq", dl.Topic).
		Bool("instance_blocked", blocked).
		Msg("record dead-lettered; its instance's later events are parked until it is replayed or discarded (troupe dlq)")
	return nil
}

// decodeFailure classifies an error of Codec.Decode: the value itself is
// bad (permanent: straight to the dead letters), unless the registry could
// not be asked, which a retry may fix.
func decodeFailure(err error) error {
	err = fmt.Errorf("decode: %w", err)
	if errors.Is(err, avro.ErrRegistryUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return Permanent(err)
}

// instanceOf is the instance a record belongs to: its key, or its
// ce_sagaid header when it has no key.
func instanceOf(r *kgo.Record) string {
	if len(r.Key) > 0 {
		return string(r.Key)
	}
	id, _ := event.Header(r, event.HeaderSagaID)
	return id
}

func (d *definition) dlq() string { return d.group() + ".dlq" }

// dlqRetention is how long a DLQ the step creates keeps dead letters: 30
// days (topology.DLQRetention), long enough to notice and replay.
const dlqRetention = "2592000000"

// createDLQ creates the step's dead-letter topic with partitions partitions
// if it is missing. A DLQ with another partition count is used as it is:
// dead letters then go by key (replay.KeepPartition).
func createDLQ(ctx context.Context, adm *kadm.Client, d *definition, partitions int32) error {
	topic := d.dlq()
	resp, err := adm.CreateTopic(ctx, partitions, -1, map[string]*string{
		"cleanup.policy": kadm.StringPtr("delete"),
		"retention.ms":   kadm.StringPtr(dlqRetention),
	}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create dead-letter topic %s (%d partitions): %w", topic, partitions, err)
	}
	return nil
}

func withoutHeader(hs []kgo.RecordHeader, key string) []kgo.RecordHeader {
	for i, h := range hs {
		if h.Key == key {
			out := make([]kgo.RecordHeader, 0, len(hs)-1)
			out = append(out, hs[:i]...)
			for _, h := range hs[i+1:] {
				if h.Key != key {
					out = append(out, h)
				}
			}
			return out
		}
	}
	return hs
}
