package step

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// maxTimersPerInterval bounds the timers one partition fires per commit
// interval, so that a backlog of due timers cannot make one transaction huge.
const maxTimersPerInterval = 1000

// cycle is one commit interval: the records handled, the timers fired, and
// the state they changed, committed (or dropped) together.
type cycle struct {
	rt    *Runtime
	ctx   context.Context // the step's; cancelled at shutdown
	pctx  context.Context // for producing: not cancelled at shutdown
	txn   *state.Txn
	tasks map[int32]*taskCycle

	// work counts what the interval did: an idle one commits nothing.
	work int
	// abort means the interval must not commit (exactly-once): a record came
	// for a partition that is not active (it was just revoked).
	abort bool
	// failed is the first record that failed past its retries under
	// RetryPolicy.StopPartition; its partition stops.
	failed *failure

	mu      sync.Mutex // guards what the produce promises set
	prodErr error
	clNext  map[int32]int64 // next changelog offset per partition

	buf []byte

	sched
}

type taskCycle struct {
	t *task
	p int32
	// inputs are the records fetched per topic, and which are settled.
	inputs map[string]*input
	// stopped: the partition stopped at a record in this interval (held for
	// a retry, see fail, or stopped for good): nothing more of it starts.
	stopped bool
	park    parkCycle
	final   map[string]finalProgress
}

type failure struct {
	t   *task
	err *RecordError
}

func (rt *Runtime) newCycle(ctx context.Context) *cycle {
	return &cycle{
		rt:     rt,
		ctx:    ctx,
		pctx:   context.WithoutCancel(ctx),
		txn:    rt.store.NewTxn(),
		tasks:  make(map[int32]*taskCycle),
		clNext: make(map[int32]int64),
	}
}

// runExactlyOnce is the exactly-once loop: each interval is one transaction
// holding the outputs, the changelog records and the input offsets. The
// store batch is applied only after the transaction commits, with the
// changelog offsets it reflects: local state is never ahead of Kafka, so a
// crash never needs a wipe, only a restore of what the store missed.
func (rt *Runtime) runExactlyOnce(ctx context.Context) error {
	for ctx.Err() == nil {
		if d := abortBackoff(rt.aborted); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
		}
		if err := rt.activateRestored(); err != nil {
			return err
		}
		rt.resumeHeld(time.Now())
		if err := rt.sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		c := rt.newCycle(ctx)
		if err := c.collect(rt.sess.PollRecords); err != nil {
			c.txn.Discard()
			return err
		}

		ectx, cancel := context.WithTimeout(c.pctx, 2*rt.cfg.TransactionTimeout)
		start := time.Now()
		flushErr := rt.cl.Flush(ectx)
		c.mu.Lock()
		prodErr := errors.Join(c.prodErr, flushErr)
		c.mu.Unlock()
		commit := !c.abort && c.failed == nil && prodErr == nil
		// An idle interval ends as an abort: there is nothing to commit,
		// and franz-go ends a committing transaction without offsets by
		// holding the session for 500 ms (for brokers without KIP-447),
		// which made every quiet step's next record wait that long.
		idle := commit && c.work == 0
		var committed bool
		var err error
		// An interval that polled nothing since the last commit (timers
		// fired, or records carried over were handled) commits its
		// partitions' committed offsets again, for the broker to check
		// this member's generation (fenceOffsets).
		var fence map[string]map[int32]kgo.EpochOffset
		polledNothing := commit && !idle && len(rt.cl.UncommittedOffsets()) == 0
		if polledNothing {
			fence = c.fenceOffsets()
		}
		if polledNothing && len(fence) == 0 {
			// Nothing to fence with: the session's End would hold the
			// loop 500 ms (it takes a commit without offsets for a
			// pre-KIP-447 broker's), so the client ends it.
			committed, err = c.endWithoutOffsets(ectx)
		} else {
			committed, err = rt.sess.End(c.commitContext(ectx, fence), kgo.TransactionEndTry(commit && !idle))
		}
		cancel()
		if !idle {
			rt.lastCommit = time.Since(start)
			rt.m.commit.Observe(rt.lastCommit.Seconds())
		}
		switch {
		case err != nil:
			// Whether the transaction committed is unknown: the store is
			// not applied (a restore reads what did commit), and the
			// session starts again.
			c.txn.Discard()
			rt.m.aborts.Inc()
			if ctx.Err() != nil {
				return fmt.Errorf("end transaction: %w", errors.Join(err, prodErr))
			}
			fenced := errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
			return &sessionLost{err: errors.Join(err, prodErr), fenced: fenced}
		case prodErr != nil:
			// The transaction is aborted and the session rewound to the
			// committed offsets, as after a rebalance: a broker lost
			// mid-transaction, or the transaction timed out (the next
			// Begin recovers the producer id, KIP-588). Only a failure that
			// lasts is fatal.
			c.txn.Discard()
			rt.m.aborts.Inc()
			if err := rt.produceFailing(prodErr); err != nil {
				return err
			}
		case idle:
			c.txn.Discard()
			rt.aborted = 0 // nothing was refused
		case !committed:
			// Aborted: the session rewound to the committed offsets, and
			// the records are fetched and handled again.
			c.txn.Discard()
			rt.m.aborts.Inc()
			rt.aborted++
			if c.failed == nil && rt.aborted <= 3 || rt.aborted%100 == 0 {
				rt.log.Info().Int("aborted_in_a_row", rt.aborted).Dur("next_in", abortBackoff(rt.aborted)).
					Msg("transaction aborted (partitions moved); processing again from the last commit")
			}
		default:
			rt.aborted = 0
			if err := c.apply(); err != nil {
				return err
			}
			if c.work > 0 {
				rt.committedAt = time.Now()
			}
			c.rewindFetch()
			if c.work > 0 {
				// An empty interval proves nothing: a run of produce
				// errors ends only when work commits.
				rt.produceOK()
			}
		}
		rt.m.committed(committed && prodErr == nil)
		if !committed || prodErr != nil {
			// The session rewound the consumer to where it had polled at
			// the last commit: what that commit carried over lies before
			// it, and is carried again.
			rt.carry = c.carried
		}
		if c.failed != nil {
			rt.stopTask(c.failed.t, c.failed.err)
		}
		rt.endInterval()
	}
	return nil
}

// abortBackoff is how long the loop waits before the interval after n
// aborts in a row. One abort (a rebalance) is retried at once; a run of
// them, each refused again (a member the group dropped without its
// knowing, firing timers that fail at once), backs off to one try every 2
// s rather than hammering the brokers with hundreds a second.
func abortBackoff(n int) time.Duration {
	if n < 2 {
		return 0
	}
	return min(25*time.Millisecond<<min(n-2, 10), 2*time.Second)
}

// endWithoutOffsets ends an interval that has no offsets to commit, not
// even committed ones to commit again (fenceOffsets), on the client rather
// than the session: it commits unless a partition it wrote to is no longer
// active (revoked or lost since it began; then the next owner does that
// work). Its changelog records are produced before this check, so a new
// owner restoring the partition waits for this transaction
// (read_committed) and sees what it did.
func (c *cycle) endWithoutOffsets(ctx context.Context) (bool, error) {
	commit := true
	for _, tc := range c.tasks {
		if tc.t == nil || tc.t.state.Load() != taskActive {
			commit = false
		}
	}
	if err := c.rt.cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return false, err
	}
	return commit, nil
}

// produceFailTimeout is how long produce errors may abort every interval
// before the step gives up: longer than a broker's failover, shorter than
// an operator's patience with a topic that is gone.
const produceFailTimeout = 2 * time.Minute

// produceFailing notes an interval aborted by a produce error, logging the
// first of a run of them and then one every 10 s, and fails once they have
// lasted produceFailTimeout.
func (rt *Runtime) produceFailing(err error) error {
	now := time.Now()
	if rt.prodFailSince.IsZero() {
		rt.prodFailSince = now
	}
	if d := now.Sub(rt.prodFailSince); d > produceFailTimeout {
		return fmt.Errorf("producing has failed for %s, every transaction aborted: %w (does the topic exist? is the cluster reachable?)", d.Round(time.Second), err)
	}
	if now.Sub(rt.prodFailLogged) >= 10*time.Second {
		rt.prodFailLogged = now
		rt.log.Warn().Err(err).Dur("failing_for", now.Sub(rt.prodFailSince)).
			Msg("produce failed; transaction aborted, processing again from the last commit")
	}
	return nil
}

// produceOK ends a run of produce errors.
func (rt *Runtime) produceOK() {
	if !rt.prodFailSince.IsZero() {
		rt.log.Info().Dur("after", time.Since(rt.prodFailSince)).Msg("producing again; transactions commit")
		rt.prodFailSince, rt.prodFailLogged = time.Time{}, time.Time{}
	}
}

// runAtLeastOnce is the at-least-once loop: each interval flushes its
// outputs and changelog records, applies the store batch (with the input
// offsets it reached), then commits the offsets. A crash between those
// steps redelivers records that the applied offsets (restored from the
// changelog if need be) then drop.
func (rt *Runtime) runAtLeastOnce(ctx context.Context) error {
	held, cancel := context.WithCancel(context.Background())
	cancel()
	for ctx.Err() == nil {
		if err := rt.activateRestored(); err != nil {
			return err
		}
		rt.resumeHeld(time.Now())
		// Polling with a cancelled context holds off rebalances (see
		// kgo.BlockRebalanceOnPoll) until AllowRebalance: the interval owns
		// its partitions from start to commit, timers included.
		rt.cl.PollRecords(held, 1)
		c := rt.newCycle(ctx)
		err := c.collect(rt.cl.PollRecords)
		if err == nil {
			err = c.commitAtLeastOnce()
		}
		rt.m.committed(err == nil)
		c.txn.Discard()
		if err == nil {
			c.rewindFetch()
		}
		rt.cl.AllowRebalance()
		if err != nil {
			return err
		}
		if c.failed != nil {
			rt.stopTask(c.failed.t, c.failed.err)
		}
		rt.endInterval()
	}
	return nil
}

func (c *cycle) commitAtLeastOnce() error {
	rt := c.rt
	if c.work == 0 && len(rt.pending) == 0 {
		return nil
	}
	start := time.Now()
	defer func() { rt.lastCommit = time.Since(start); rt.m.commit.Observe(rt.lastCommit.Seconds()) }()
	fctx, cancel := context.WithTimeout(c.pctx, 2*rt.cfg.TransactionTimeout)
	defer cancel()
	flushErr := rt.cl.Flush(fctx)
	c.mu.Lock()
	prodErr := errors.Join(c.prodErr, flushErr)
	c.mu.Unlock()
	if prodErr != nil {
		// Outputs may be half written; the restart redelivers the inputs.
		return fmt.Errorf("produce: %w (does the topic exist?)", prodErr)
	}
	if err := c.apply(); err != nil {
		return err
	}
	for _, tc := range c.tasks {
		if tc.t == nil {
			continue
		}
		for topic := range tc.inputs {
			_, eo, _ := tc.progress(topic)
			rt.pending = putOffset(rt.pending, topic, tc.p, eo)
		}
	}
	if len(rt.pending) > 0 {
		var cerr error
		rt.cl.CommitOffsetsSync(fctx, rt.pending, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			cerr = commitError(resp, err)
		})
		if cerr != nil {
			// Not fatal: the applied offsets in the store already drop
			// redeliveries, and the next interval commits these again.
			rt.log.Warn().Err(cerr).Msg("commit offsets failed; retrying with the next interval")
		} else {
			clear(rt.pending)
		}
	}
	return nil
}

// collect runs the interval (exec.go) and writes the changelog records
// of what it changed.
func (c *cycle) collect(poll func(context.Context, int) kgo.Fetches) error {
	if err := c.run(poll); err != nil {
		return err
	}
	return c.writeChangelog()
}

func (rt *Runtime) fetchErrors(fs kgo.Fetches) error {
	for _, fe := range fs.Errors() {
		switch {
		case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, context.DeadlineExceeded):
		case errors.Is(fe.Err, kgo.ErrClientClosed):
			return fmt.Errorf("kafka client closed: %w", fe.Err)
		default:
			rt.log.Warn().Err(fe.Err).Str(logging.FieldTopic, fe.Topic).Int32(logging.FieldPartition, fe.Partition).Msg("fetch error")
		}
	}
	return nil
}

// setTimer applies a handler's timer operation: a timer is a key ordered by
// fire time plus an index key by name, so that it can be replaced or
// cancelled.
func (c *cycle) setTimer(p int32, id string, op timerOp) error {
	ik := state.TimerIndexKey(id, op.name)
	old, ok, err := c.txn.Get(p, ik)
	if err != nil {
		return err
	}
	if ok {
		at, err := state.DecodeOffset(old)
		if err != nil {
			return fmt.Errorf("timer %q of instance %q: %w", op.name, id, err)
		}
		if err := c.txn.Delete(p, state.TimerKey(time.Unix(0, at), id, op.name)); err != nil {
			return err
		}
	}
	if op.cancel {
		if ok {
			return c.txn.Delete(p, ik)
		}
		return nil
	}
	at := max(op.at.UnixNano(), 0)
	c.buf = op.timer.Append(c.buf[:0])
	if err := c.txn.Set(p, state.TimerKey(time.Unix(0, at), id, op.name), c.buf); err != nil {
		return err
	}
	return c.txn.Set(p, ik, state.EncodeOffset(at))
}

// fireTimers emits the due event timers of every active partition and
// deletes them, in this interval's transaction, and makes the due OnTimer
// timers jobs of their instances' lanes. It runs first in the interval,
// before any handler: nothing else writes the instances then.
func (c *cycle) fireTimers(now time.Time) error {
	rt := c.rt
	lo, hi := state.TimersDue(now)
	type due struct {
		key []byte
		tm  state.Timer
	}
	for _, t := range rt.activeTasks() {
		var ds []due
		err := c.txn.Scan(t.p, lo, hi, func(k, v []byte) (bool, error) {
			tm, err := state.DecodeTimer(v)
			if err != nil {
				return false, fmt.Errorf("timer in partition %d: %w", t.p, err)
			}
			ds = append(ds, due{key: append([]byte(nil), k...), tm: tm})
			return len(ds) < maxTimersPerInterval, nil
		})
		if err != nil {
			return err
		}
		for _, d := range ds {
			at, id, name, err := state.ParseTimerKey(d.key)
			if err != nil {
				return err
			}
			if d.tm.Topic == "" && name != expireTimer {
				c.enqueue(&job{tc: c.taskCycle(t.p), timer: &dueTimer{key: d.key, at: at, id: id, name: name, tm: d.tm}}, id)
				continue
			}
			// An OnTimer handler fired before it in this pass may have
			// cancelled or replaced it.
			if _, ok, err := c.txn.Get(t.p, d.key); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			if err := c.txn.Delete(t.p, d.key); err != nil {
				return err
			}
			if err := c.txn.Delete(t.p, state.TimerIndexKey(id, name)); err != nil {
				return err
			}
			if name == expireTimer {
				if err := c.expire(t.p, id); err != nil {
					return err
				}
				continue
			}
			if took, err := c.timerHook(t.p, id, name, d.tm); took || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			m := event.Metadata{
				ID: d.tm.EventID, Source: rt.source, Type: d.tm.Type, Time: now.UTC(),
				SagaID: d.tm.SagaID, CausationID: d.tm.CausationID, CorrelationID: d.tm.CorrelationID, TraceParent: d.tm.TraceParent,
				Timer: name,
			}
			rt.cl.Produce(c.pctx, &kgo.Record{Topic: d.tm.Topic, Key: []byte(id), Value: d.tm.Value, Headers: m.Headers()}, c.promise)
			rt.m.timers.Inc()
			c.work++
		}
		if len(ds) > 0 {
			c.taskCycle(t.p) // so that the partition's changes are written
		}
	}
	return nil
}

// writeChangelog records the input offsets reached and produces every state
// key this interval changed, once, with its latest value.
func (c *cycle) writeChangelog() error {
	for p, tc := range c.tasks {
		if tc.t == nil {
			continue
		}
		for topic := range tc.inputs {
			pr, _, _ := tc.progress(topic)
			if err := c.txn.Set(p, state.InputOffsetKey(topic), state.EncodeProgress(pr)); err != nil {
				return err
			}
		}
	}
	changelog := c.rt.def.changelog()
	for _, p := range c.txn.Partitions() {
		err := c.txn.Changes(p, func(k, v []byte) error {
			c.rt.cl.Produce(c.pctx, &kgo.Record{Topic: changelog, Partition: p, Key: k, Value: v}, c.promise)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *cycle) promise(r *kgo.Record, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if c.prodErr == nil {
			c.prodErr = fmt.Errorf("produce to %s: %w", r.Topic, err)
		}
		return
	}
	if r.Topic == c.rt.def.changelog() && r.Offset+1 > c.clNext[r.Partition] {
		c.clNext[r.Partition] = r.Offset + 1
	}
}

// apply writes the interval's state to the store, with the changelog
// offsets it reflects, and moves the tasks' applied offsets on.
func (c *cycle) apply() error {
	for p, next := range c.clNext {
		if err := c.txn.SetChangelogOffset(p, next); err != nil {
			return err
		}
	}
	if err := c.txn.Commit(); err != nil {
		// Kafka has what the store lacks; a restart restores it.
		return err
	}
	for _, tc := range c.tasks {
		if tc.t == nil {
			continue
		}
		for topic := range tc.inputs {
			tc.t.applied[topic], _, _ = tc.progress(topic)
		}
	}
	c.applyParking()
	return nil
}

// commitError is the first error of an offset commit, overall or per
// partition.
func commitError(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil || resp == nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("commit %s/%d: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}
