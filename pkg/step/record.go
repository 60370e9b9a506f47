package step

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// The record path. Every input record, and every due timer that calls the
// OnTimer handler, is a job of its instance's lane (exec.go). When the job
// reaches the head of its lane, guard runs the ordered guards:
//
//	partition active -> redelivery -> parking (park, discard, release) ->
//	watch -> metadata -> instance id -> wanted type -> instance state ->
//	dedupe (the instance's applied offset, then its recent ids) ->
//	saga rules -> decode
//
// each of which either passes the record on or returns the verdict that
// ends its path. A record that passes them all gets the verdict vCall: its
// handler runs (concurrently with other instances' handlers), and the
// call's outcome is a verdict too. settle alone applies verdicts: it alone
// advances the offset past a record, holds a partition for a retry, or
// dead-letters; parking happens in the parking guard, which alone writes
// the park.

type verdictKind int

const (
	vDone  verdictKind = iota // the record is finished: advance past it
	vCall                     // run the handler
	vFail                     // it failed with err: retry, dead-letter or stop (decideFail)
	vAbort                    // the interval must not commit (exactly-once)
	vError                    // a storage error: the step stops
)

type verdict struct {
	kind verdictKind
	err  error
}

var (
	done  = verdict{kind: vDone}
	abort = verdict{kind: vAbort}
)

func failed(err error) verdict { return verdict{kind: vFail, err: err} }

func stopErr(err error) verdict {
	if err == nil {
		return done
	}
	return verdict{kind: vError, err: err}
}

// guard runs the guards of record job j (see above). On vCall, j holds
// the handler, the call and the decoded event.
func (c *cycle) guard(j *job) verdict {
	if j.rec == nil {
		return c.guardTimer(j)
	}
	rt, tc, r := c.rt, j.tc, j.rec
	t := tc.t
	if t == nil || t.state.Load() != taskActive {
		// Fetching a partition starts only after its restore, and a
		// revoked one's records are not returned: this is a revocation
		// racing the poll. Under exactly-once the session aborts this
		// transaction; under at-least-once rebalances wait for us.
		rt.log.Debug().Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, r.Partition).Msg("record for a partition not active; aborting the interval")
		return abort
	}
	c.work++
	if t.applied[r.Topic].Has(r.Offset) {
		rt.m.duplicate.Inc()
		return done
	}
	if v, consumed := c.parkGuard(tc, r); consumed {
		return v
	}
	if h := rt.def.watched[r.Topic]; h != nil {
		return c.guardWatched(j, h)
	}

	meta, err := event.FromRecord(r)
	if err != nil {
		return failed(Permanent(err))
	}
	id := string(r.Key)
	if id == "" {
		id = meta.SagaID
	}
	j.id = id
	if err := state.ValidID(id); err != nil {
		return failed(Permanent(err))
	}
	if meta.IDDerived {
		rt.m.withoutID.Inc()
	}
	if v, stop := c.placeGuard(j, meta, id); stop {
		return v
	}
	if v, stop := c.typeGuard(r, &meta); stop {
		return v
	}
	if meta.Type != "" && !rt.wants(r.Topic, meta.Type) {
		rt.m.ignored.Inc()
		return done
	}
	key := state.InstanceKey(id)
	inst, v := c.instance(tc, id, key)
	if v.kind != vDone {
		return v
	}
	if c.redelivered(tc, r, &inst, id, meta.Source) || inst.HasSeen(meta.ID) {
		rt.m.duplicate.Inc()
		return done
	}
	if took, v := c.sagaInput(tc, r, meta, id, key, &inst); took {
		return v
	}
	h, name, ev, err := rt.decode(c.ctx, meta.Type, r.Value)
	if err != nil {
		return failed(decodeFailure(err))
	}
	if h == nil {
		rt.m.ignored.Inc()
		return done
	}
	if c.orphan(r, meta, id, name) {
		return done
	}
	j.h, j.name, j.ev, j.key, j.inst, j.eventID = h, name, ev, key, inst, meta.ID
	j.cl = &call{rt: rt, rec: r, meta: meta, id: id}
	return verdict{kind: vCall}
}

// redelivered reports whether instance inst has applied r already: r is at
// or before the offset of the last record of its topic applied to it. The
// partition's stored progress drops redeliveries before this; this catches
// those it cannot (a state write that reached the changelog without the
// progress of its interval, at-least-once), which is worth a warning.
func (c *cycle) redelivered(tc *taskCycle, r *kgo.Record, inst *state.Instance, id, source string) bool {
	off, ok := inst.AppliedAt(c.rt.topicHash(r.Topic))
	if !ok || r.Offset > off {
		return false
	}
	c.rt.warnProducer("redelivered", source, func(e *zerolog.Event) {
		e.Str(logging.FieldSaga, id).Str(logging.FieldTopic, r.Topic).Int32(logging.FieldPartition, r.Partition).
			Int64(logging.FieldOffset, r.Offset).Int64("instance_applied", off).Int64("partition_progress", tc.t.applied[r.Topic].Next).
			Msg("dropped a record its instance had applied, which the partition's stored progress did not cover (a restart after a partial write); the state stays exact")
	})
	return true
}

// guardWatched is the path of a record of a watched topic (Watch): not
// decoded, not deduplicated, not subject to the saga rules.
func (c *cycle) guardWatched(j *job, h *handler) verdict {
	r := j.rec
	id := string(r.Key)
	if state.ValidID(id) != nil {
		c.rt.m.ignored.Inc()
		return done
	}
	j.id = id
	key := state.InstanceKey(id)
	inst, v := c.instance(j.tc, id, key)
	if v.kind != vDone {
		return v
	}
	// The record's headers may repeat another event's (a dead letter keeps
	// the failed event's): what h emits derives from the record's place.
	meta, _ := event.FromRecord(r)
	meta.ID = ""
	j.h, j.ev, j.key, j.inst = h, r, key, inst
	j.cl = &call{rt: c.rt, rec: r, meta: meta, id: id}
	return verdict{kind: vCall}
}

// instance reads instance id's stored state in this interval's transaction
// (zero if it has none); unreadable state fails the record.
func (c *cycle) instance(tc *taskCycle, id string, key []byte) (state.Instance, verdict) {
	var inst state.Instance
	raw, found, err := c.txn.Get(tc.t.p, key)
	if err != nil || !found {
		return inst, stopErr(err)
	}
	if inst, err = state.DecodeInstance(raw); err != nil {
		return inst, failed(Permanent(fmt.Errorf("stored state of the instance: %w", err)))
	}
	return inst, done
}

// parkGuard applies the parking decision to r before it is handled, and
// reports whether that consumed the record (a discard marker, or an event
// of a blocked instance, which it parks). A replay of the dead letter a
// blocked instance waits for releases the instance and goes on to its
// handler; so do the events coming back from the park while it drains.
func (c *cycle) parkGuard(tc *taskCycle, r *kgo.Record) (verdict, bool) {
	retry := r.Topic == c.rt.def.retry()
	if !retry && len(tc.t.parking.heads) == 0 && len(tc.park.heads) == 0 {
		return done, false // the common case: nothing blocked in this partition
	}
	id := instanceOf(r)
	f := parkFacts{retryTopic: retry}
	var d dlq.Discarded
	if retry {
		d, f.discard = dlq.ParseDiscard(r)
	}
	var h *head
	if id != "" && tc.hasHead(id) {
		var err error
		if h, err = c.head(tc, id); err != nil {
			return stopErr(err), true
		}
	}
	if h != nil {
		f.hasHead, f.status, f.last = true, h.status, h.last
		ceID, _ := event.Header(r, event.HeaderID)
		f.discardMatches = d.EventID == "" || d.EventID == h.eventID
		_, f.replay = dlq.ReplayedFrom(r)
		f.replayOfHead = f.replay && ceID == h.eventID
		f.seq, f.unparked = unparkedSeq(r)
	}
	switch decidePark(f) {
	case parkPark:
		return stopErr(c.park(tc, r, id, h, 0)), true
	case parkKeepSeq:
		return stopErr(c.park(tc, r, id, h, f.seq)), true
	case parkReleaseHandle:
		why := ""
		if f.replay {
			why = "replayed"
		}
		if err := c.release(tc, id, h, why); err != nil {
			return stopErr(err), true
		}
		return done, false
	case parkDiscardRelease:
		return stopErr(c.release(tc, id, h, "discarded")), true
	case parkDiscardIgnore:
		c.rt.m.ignored.Inc()
		c.rt.log.Debug().Str(logging.FieldSaga, id).Int64(logging.FieldOffset, r.Offset).Str("event_id", d.EventID).
			Msg("discard marker for no outstanding dead letter; ignored")
		return done, true
	}
	return done, false
}

// run is the part of a job that runs outside the loop, concurrently with
// other instances' jobs: the handler call, under a context that ends at the
// handler timeout, at shutdown and when the partition is revoked. It
// touches nothing but the job.
func (j *job) run(ctx context.Context) {
	j.cl.ctx = ctx
	j.cl.inst = &j.inst
	err := invoke(j.h, j.cl, j.ev)
	if err == nil {
		err = j.cl.err
	}
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("handler timed out after %s (Config.HandlerTimeout, --handler-timeout): %w", time.Since(j.started).Round(time.Millisecond), err)
	}
	j.err = err
}

// invoke calls the handler, turning a panic into a permanent error.
func invoke(h *handler, c *call, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Permanent(fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack()))
		}
	}()
	return h.call(c, v)
}

// finish turns a finished call into its verdict, applying its effects
// when it succeeded: the instance (with the event remembered for dedupe),
// its saga flags, timers and emits.
func (c *cycle) finish(j *job) verdict {
	if j.timer != nil {
		return c.finishTimer(j)
	}
	if j.err != nil {
		return failed(j.err)
	}
	if j.rec != nil && c.rt.def.watched[j.rec.Topic] == nil {
		c.rt.sagaHandled(j.cl, j.name)
	}
	if err := c.applyCall(j.tc.t.p, j.key, &j.inst, j.cl, j.eventID); err != nil {
		return stopErr(err)
	}
	c.rt.m.processed.Inc()
	return done
}

// settle applies the verdict of record job j: it is the one place that
// advances past a record, holds its partition for a retry, dead-letters it
// or stops its partition. It returns only storage errors.
func (c *cycle) settle(j *job, v verdict) error {
	tc := j.tc
	switch v.kind {
	case vDone:
		if j.rec != nil {
			tc.settled(j)
			delete(tc.t.retry.attempts, j.place())
		}
	case vAbort:
		c.abort = true
	case vError:
		return v.err
	case vFail:
		if j.rec == nil {
			return nil // timers handle their own failures (finishTimer)
		}
		return c.fail(j, v.err)
	}
	return nil
}

// fail settles a record whose handling failed with err, as decideFail
// says.
func (c *cycle) fail(j *job, err error) error {
	rt, tc, r := c.rt, j.tc, j.rec
	t := tc.t
	place := j.place()
	attempt := t.retry.attempts[place] + 1
	fv := decideFail(rt.cfg.Retry, failFacts{
		attempt: attempt, permanent: IsPermanent(err),
		// A call cut short by shutdown or by its partition's revocation
		// (its context ended) did not really fail.
		shuttingDown: c.ctx.Err() != nil || t.ctx != nil && t.ctx.Err() != nil, partitionHeld: tc.stopped,
	})
	switch fv.kind {
	case failAgain:
		c.hold(tc, time.Time{})
		return nil
	case failRetry:
		wait := rt.cfg.Retry.jittered(fv.wait)
		t.retry.attempts[place] = attempt
		rt.m.retries.Inc()
		rt.log.Debug().Err(err).Str(logging.FieldSaga, j.id).Str(logging.FieldTopic, r.Topic).
			Int32(logging.FieldPartition, r.Partition).Int64(logging.FieldOffset, r.Offset).
			Int("attempt", attempt).Dur("retry_in", wait).Msg("record failed; retrying")
		c.hold(tc, time.Now().Add(wait))
		return nil
	}
	delete(t.retry.attempts, place)
	if fv.kind == failStop {
		// The partition stops whether or not the interval commits (under
		// exactly-once it does not): counted now.
		rt.m.failed.Counter.Inc()
	} else {
		rt.m.failed.Inc() // dead-lettered: counted once the dead letter commits
	}
	re := &RecordError{Step: rt.def.group(), Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Instance: j.id, Attempts: attempt, Err: err}
	if fv.kind == failStop {
		rt.log.Error().Err(err).Str(logging.FieldSaga, j.id).Str(logging.FieldTopic, r.Topic).
			Int32(logging.FieldPartition, r.Partition).Int64(logging.FieldOffset, r.Offset).
			Int("attempts", attempt).Bool("permanent", IsPermanent(err)).
			Msg("record failed; stopping its partition until restart (the record is not skipped)")
		tc.stopped = true
		if c.failed == nil {
			c.failed = &failure{t: t, err: re}
		}
		return nil
	}
	if err := c.deadLetter(tc, r, j.id, re); err != nil {
		return err
	}
	tc.settled(j)
	return nil
}

// place names a record within its partition, for its retry attempts.
func (j *job) place() recordPlace { return recordPlace{topic: j.rec.Topic, offset: j.rec.Offset} }
