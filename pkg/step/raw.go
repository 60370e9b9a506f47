package step

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/logging"
	"github.com/troupehq/troupe/pkg/state"
)

// This file holds what a step needs when it does not know its events' Go
// types, as the saga coordinator does (it sees every event of its saga and
// needs only their types): a raw handler, timers that call back instead of
// emitting a stored event, and emitting values encoded elsewhere.

// rawEvent is what the raw handler gets in place of a decoded event.
type rawEvent struct {
	typ   string
	value []byte
}

// HandleRaw registers h for the records whose event type has no typed
// handler (Handle). h gets the type, read from the ce_type header, and the
// value as it is on the wire, undecoded. A record without a ce_type header
// is decoded to learn its type; if the codec does not know it, it fails like
// any undecodable record. A second HandleRaw is an error that Run reports.
//
// With a raw handler no record is skipped as "ignored": h decides what to do
// with types it does not care about.
func HandleRaw[S any](s *Step[S], h func(c *Context[S], typ string, value []byte) error) {
	if s.def.raw != nil {
		s.def.errs = append(s.def.errs, fmt.Errorf("two raw handlers"))
		return
	}
	s.def.raw = &handler{call: func(c *call, v any) error {
		ev := v.(rawEvent)
		return h(&Context[S]{c: c}, ev.typ, ev.value)
	}}
}

// Watch makes the step also consume topics and pass each of their records
// to h as it is: not decoded, not deduplicated by ce_id, not subject to the
// saga rules. The record's key is its instance; records with no usable key
// are skipped (counted as "ignored"). h's Context is that instance's, as
// for a handler, and its effects apply only if it returns nil; if it fails,
// the record is retried and dead-lettered like any other.
//
// The saga coordinator watches its steps' dead-letter and retry topics to
// record dead letters, replays and discards in the instances' history:
// records that repeat an event's ce_id and may not decode. Watched topics
// are inputs: they must have the step's partition count.
func Watch[S any](s *Step[S], h func(c *Context[S], r *kgo.Record) error, topics ...string) {
	if s.def.watched == nil {
		s.def.watched = map[string]*handler{}
	}
	wh := &handler{call: func(c *call, v any) error { return h(&Context[S]{c: c}, v.(*kgo.Record)) }}
	for _, t := range topics {
		s.def.watched[t] = wh
	}
	s.def.inputs = append(s.def.inputs, topics...)
}

// OnTimer registers h to run when a timer set with Context.SetTimer fires.
// h gets a Context for the timer's instance (its state, Emit, timers), and
// the timer's name; like a handler, its effects apply only if it returns
// nil. If h fails, the timer fires again a second later; if it fails with a
// Permanent error, the timer is dropped (with an error log). Timers set with
// After and At emit their event and do not call h.
func OnTimer[S any](s *Step[S], h func(c *Context[S], name string) error) {
	if s.def.onTimer != nil {
		s.def.errs = append(s.def.errs, fmt.Errorf("two OnTimer handlers"))
		return
	}
	s.def.onTimer = func(c *call, name string) error { return h(&Context[S]{c: c}, name) }
}

// SetTimer sets the instance's timer name to fire at t and call the step's
// OnTimer handler then. Setting a timer that is already set replaces it;
// Cancel cancels it. Like every timer it is state: it survives restarts and
// moves with its partition.
func (c *Context[S]) SetTimer(name string, at time.Time) {
	m := c.c.derivedMeta("", "")
	c.c.derived++
	c.c.timers = append(c.c.timers, timerOp{name: name, at: at, timer: state.Timer{
		EventID: deriveID(c.c.seed(), c.c.rt.source, name, c.c.derived, c.c.eventTime()),
		SagaID:  m.SagaID, CorrelationID: m.CorrelationID, CausationID: m.CausationID, TraceParent: m.TraceParent,
	}})
}

// expireTimer is the timer of Context.Expire. Timer names starting with
// "troupe." are the runtime's.
const expireTimer = "troupe.expire"

// Expire has the runtime forget the instance once at passes: its state, its
// saga flags, the event ids it remembers for dedupe and its timers, deleted
// from the store and, with a tombstone, from the changelog. It is for an
// instance that is done for good (its saga ended): an event for it after
// that starts a new instance, and a redelivered old event is no longer
// recognised as a duplicate. Calling it again moves the time. An instance
// blocked by a dead letter is kept until the dead letter is settled.
func (c *Context[S]) Expire(at time.Time) {
	c.c.timers = append(c.c.timers, timerOp{name: expireTimer, at: at})
}

// expire deletes instance id for its expireTimer. An instance blocked by a
// dead letter is kept (its parked events wait for a replay or a discard)
// and looked at again an hour later.
func (c *cycle) expire(p int32, id string) error {
	c.work++
	if _, blocked, err := c.txn.Get(p, headKey(id)); err != nil || blocked {
		if err != nil {
			return err
		}
		return c.setTimer(p, id, timerOp{name: expireTimer, at: time.Now().Add(time.Hour)})
	}
	if err := c.cancelTimers(p, id); err != nil {
		return err
	}
	c.rt.m.expired.Inc()
	return c.txn.Delete(p, state.InstanceKey(id))
}

// EmitRaw produces value, an event of type typ (its full name, the ce_type)
// already encoded for topic, keyed by the instance id, with headers derived
// from the event being handled as Emit does. A record too large to produce
// fails the handler, as Emit's error says.
func (c *Context[S]) EmitRaw(topic, typ string, value []byte) {
	m := c.c.derivedMeta(typ, "")
	r := &kgo.Record{Topic: topic, Key: []byte(c.c.id), Value: value, Headers: m.Headers()}
	if c.c.fit(r) == nil {
		c.c.emits = append(c.c.emits, r)
	}
}

// Topic is the topic of the record being handled; empty in an OnTimer
// handler.
func (c *Context[S]) Topic() string { return c.c.rec.Topic }

// Partition is the partition of the record being handled (or of the
// timer's instance).
func (c *Context[S]) Partition() int32 { return c.c.rec.Partition }

// Offset is the offset of the record being handled; -1 in an OnTimer
// handler.
func (c *Context[S]) Offset() int64 { return c.c.rec.Offset }

// Time is when the event being handled happened: its ce_time, else its
// record's timestamp. In an OnTimer handler it is the time the timer was set
// to fire.
func (c *Context[S]) Time() time.Time { return c.c.eventTime() }

// wants reports whether a record of type typ on topic goes further than the
// "ignored" count: to a typed or raw handler, or to the saga rules.
func (rt *Runtime) wants(topic, typ string) bool {
	return rt.byName[typ] != nil || rt.def.raw != nil || (rt.cfg.Saga != nil && topic == rt.cfg.Saga.EndedTopic)
}

// decode finds the handler of a record and what to pass it: the decoded
// event for a typed handler, the raw value for the raw handler. typ is the
// ce_type header. A nil handler means the record is ignored.
func (rt *Runtime) decode(ctx context.Context, typ string, value []byte) (h *handler, name string, v any, err error) {
	if typ != "" && rt.byName[typ] == nil {
		if rt.def.raw == nil {
			return nil, typ, nil, nil
		}
		return rt.def.raw, typ, rawEvent{typ: typ, value: value}, nil
	}
	name, v, err = rt.cfg.Codec.Decode(ctx, value)
	if err != nil {
		return nil, name, nil, err
	}
	if h = rt.byName[name]; h == nil && rt.def.raw != nil {
		return rt.def.raw, name, rawEvent{typ: name, value: value}, nil
	}
	return h, name, v, nil
}

// dueTimer is a due timer that calls the OnTimer handler (set by
// SetTimer): a job of its instance's lane.
type dueTimer struct {
	key      []byte // its timer key
	at       time.Time
	id, name string
	tm       state.Timer
}

// guardTimer starts the path of a due OnTimer timer: it is still set (an
// earlier job of the instance may have cancelled it), its keys are deleted
// in this interval's transaction, and the saga rules may drop it; then the
// handler runs.
func (c *cycle) guardTimer(j *job) verdict {
	rt, d, p := c.rt, j.timer, j.tc.p
	if _, ok, err := c.txn.Get(p, d.key); err != nil || !ok {
		return stopErr(err)
	}
	for _, k := range [][]byte{d.key, state.TimerIndexKey(d.id, d.name)} {
		if err := c.txn.Delete(p, k); err != nil {
			return stopErr(err)
		}
	}
	c.work++
	if dropped, err := c.timerHook(p, d.id, d.name, d.tm); dropped || err != nil {
		return stopErr(err)
	}
	log := rt.log.With().Str(logging.FieldSaga, d.id).Int32(logging.FieldPartition, p).Str("timer", d.name).Logger()
	if rt.def.onTimer == nil {
		log.Warn().Msg("timer set with SetTimer fired, but the step has no OnTimer handler; dropped")
		return done
	}
	j.id = d.id
	j.key = state.InstanceKey(d.id)
	raw, ok, err := c.txn.Get(p, j.key)
	if err != nil {
		return stopErr(err)
	}
	if ok {
		if j.inst, err = state.DecodeInstance(raw); err != nil {
			log.Error().Err(err).Msg("stored state of the timer's instance is unreadable; timer dropped")
			return done
		}
	}
	meta := event.Metadata{
		ID: d.tm.EventID, Source: rt.source, Time: d.at, SagaID: d.tm.SagaID,
		CausationID: d.tm.CausationID, CorrelationID: d.tm.CorrelationID, TraceParent: d.tm.TraceParent,
	}
	name := d.name
	j.h = &handler{call: func(cl *call, _ any) error { return rt.def.onTimer(cl, name) }}
	j.cl = &call{rt: rt, rec: &kgo.Record{Partition: p, Offset: -1, Key: []byte(d.id), Timestamp: d.at}, meta: meta, id: d.id, timer: name}
	return verdict{kind: vCall}
}

// finishTimer applies what an OnTimer handler did; a failed one re-arms
// its timer a second later, unless it failed for good (Permanent: an
// event too large to emit, say), which drops the timer.
func (c *cycle) finishTimer(j *job) verdict {
	d := j.timer
	c.rt.m.timers.Inc()
	if IsPermanent(j.err) {
		c.rt.log.Error().Err(j.err).Str(logging.FieldSaga, d.id).Int32(logging.FieldPartition, j.tc.p).Str("timer", d.name).
			Msg("OnTimer handler failed for good (the error is permanent); the timer is dropped")
		return done
	}
	if j.err != nil {
		c.rt.log.Error().Err(j.err).Str(logging.FieldSaga, d.id).Int32(logging.FieldPartition, j.tc.p).Str("timer", d.name).
			Msg("OnTimer handler failed; the timer fires again in 1 s")
		return stopErr(c.setTimer(j.tc.p, d.id, timerOp{name: d.name, at: time.Now().Add(time.Second), timer: d.tm}))
	}
	return stopErr(c.applyCall(j.tc.p, j.key, &j.inst, j.cl, ""))
}

// applyCall writes what a successful call did: the instance (remembering
// eventID, if any, as processed), its timer operations, and its emits.
func (c *cycle) applyCall(p int32, key []byte, inst *state.Instance, cl *call, eventID string) error {
	inst.Remember(eventID, c.rt.cfg.DedupeWindow)
	if cl.rec != nil {
		inst.SetApplied(c.rt.topicHash(cl.rec.Topic), cl.rec.Offset)
	}
	c.buf = inst.Append(c.buf[:0])
	if err := c.txn.Set(p, key, c.buf); err != nil {
		return err
	}
	for _, op := range cl.timers {
		if err := c.setTimer(p, cl.id, op); err != nil {
			return err
		}
	}
	for _, out := range cl.emits {
		c.rt.cl.Produce(c.pctx, out, c.promise)
	}
	return nil
}
