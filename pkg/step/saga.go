package step

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/state"
)

// Saga is what the runtime knows of the saga a step belongs to (README: Sagas);
// set it in Config.Saga (saga.ForStep derives it from a topology, and
// `troupe run` does that). With it the runtime, not the step's handlers,
// keeps the saga's rules for every instance:
//
//   - SagaEnded: the runtime consumes EndedTopic as one more input. An end
//     marks the instance ended and cancels its pending timers; later forward
//     inputs of the instance (everything but the compensation command) are
//     dropped, and so are its event timers. Compensation commands still run.
//   - Completed: the instance is completed for this step once the step has
//     emitted CompletedBy for it (from a handler or a timer).
//   - The compensation barrier: a Command for an instance that never
//     completed is answered by the runtime with the Ack and no effect (a
//     "null compensation": the handler is not called), and marks the
//     instance compensated; a Command for an instance already compensated is
//     answered with the Ack again, without calling the handler; and a
//     compensated instance's forward inputs are dropped (no "hanging"
//     forward action after its undo). Otherwise the handler runs, and must
//     emit the Ack itself; the instance is then compensated.
//
// Each is counted in troupe_step_events_total under its own outcome
// (OutcomeEnded, OutcomeDropped, OutcomeNullCompensation,
// OutcomeRepeatedCompensation). The rules read the ce_type header, which
// every troupe producer sets.
type Saga struct {
	// EndedTopic carries SagaEnded for the saga: <app>.saga.<saga>.ended.
	// Required.
	EndedTopic string
	// CompletedBy is the full name of the event that means the step's
	// forward action is done (the topology's completed_by). Empty: the
	// step has nothing to undo, and no command comes.
	CompletedBy string
	// Command is the full name of the step's compensation command; empty if
	// it has none. The step needs a handler for it.
	Command string
	// Ack is the full name of the event that acknowledges Command, and
	// AckTopic its topic.
	Ack, AckTopic string
	// KeyField is the field of Ack that holds the saga id (the topology's
	// key). The runtime builds the Ack of a null compensation as the JSON
	// {KeyField: id}, every other field taking its schema default, so the
	// Codec must be a JSONEncoder (an *avro.Serde is).
	KeyField string
	// Retention is how long the step keeps an instance after its SagaEnded
	// (see Context.Expire); zero keeps it forever. Inputs of the instance
	// are dropped while it is kept, and dedupe holds.
	Retention time.Duration
	// Trigger is the full name of the event that starts the saga; Sources
	// maps each other event type to the ce_source of the steps that emit
	// it (<app>.<step>). A forward input of a type in Sources whose
	// ce_source is not among them is an orphan: not handled, counted
	// (OutcomeOrphan) and logged, so that a lone mid-saga event (a test
	// record, a replay to the wrong topic) makes no step act for a saga
	// that never started. Types not in Sources, and the trigger, come from
	// anyone.
	Trigger string
	Sources map[string][]string
}

// Outcomes of the saga rules, in troupe_step_events_total.
const (
	// OutcomeEnded: a SagaEnded was applied to its instance.
	OutcomeEnded = "ended"
	// OutcomeDropped: a forward input of an instance whose saga ended or
	// whose step was compensated; not handled.
	OutcomeDropped = "dropped"
	// OutcomeNullCompensation: a compensation command for an instance the
	// step never completed, acked by the runtime with no effect.
	OutcomeNullCompensation = "null_compensation"
	// OutcomeRepeatedCompensation: a compensation command for an instance
	// already compensated, acked again with no second effect.
	OutcomeRepeatedCompensation = "repeated_compensation"
)

// JSONEncoder encodes a JSON document as the record fullName for topic, a
// field missing from the document taking its schema default. *avro.Serde
// implements it. The runtime uses it for the acks it sends itself.
type JSONEncoder interface {
	EncodeJSON(ctx context.Context, topic, fullName string, doc []byte) ([]byte, error)
}

// sagaDefinition returns d with the saga's ended topic among its inputs
// (as a copy: a definition may be run by several runtimes).
func sagaDefinition(d *definition, sc *Saga) *definition {
	if sc == nil || sc.EndedTopic == "" || slices.Contains(d.inputs, sc.EndedTopic) {
		return d
	}
	cp := *d
	cp.inputs = append(slices.Clone(d.inputs), sc.EndedTopic)
	return &cp
}

// checkSaga reports every problem of Config.Saga at once; NewRuntime calls
// it once the handlers are known.
func (rt *Runtime) checkSaga() error {
	sc := rt.cfg.Saga
	if sc == nil {
		return nil
	}
	var errs []error
	if sc.EndedTopic == "" {
		errs = append(errs, errors.New("Saga.EndedTopic is empty (it is <app>.saga.<saga>.ended)"))
	}
	if sc.Command != "" {
		if sc.Ack == "" || sc.AckTopic == "" || sc.KeyField == "" {
			errs = append(errs, fmt.Errorf("Saga.Command %s needs Ack, AckTopic and KeyField", sc.Command))
		}
		if _, ok := rt.cfg.Codec.(JSONEncoder); !ok {
			errs = append(errs, fmt.Errorf("the codec (%T) cannot encode JSON, which the runtime needs to ack a null compensation (use an *avro.Serde)", rt.cfg.Codec))
		}
		if rt.byName[sc.Command] == nil && rt.def.raw == nil {
			errs = append(errs, fmt.Errorf("no handler for the compensation command %s (register one with step.Handle)", sc.Command))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("saga rules: %w", err)
	}
	return nil
}

// sagaInput applies the saga rules to a record before its handler, once the
// instance is loaded and the record is known not to be a duplicate. It
// reports whether it took the record, with the record's verdict (it has
// then written what the rule does); false means the handler runs as usual.
func (c *cycle) sagaInput(tc *taskCycle, r *kgo.Record, meta event.Metadata, id string, key []byte, inst *state.Instance) (bool, verdict) {
	sc := c.rt.cfg.Saga
	if sc == nil {
		return false, done
	}
	p := tc.t.p
	cl := &call{ctx: c.ctx, rt: c.rt, rec: r, meta: meta, id: id, inst: inst}
	var outcome string
	switch {
	case r.Topic == sc.EndedTopic:
		inst.Ended = true
		if err := c.cancelTimers(p, id); err != nil {
			return true, stopErr(err)
		}
		if sc.Retention > 0 {
			(&Context[struct{}]{c: cl}).Expire(time.Now().Add(sc.Retention))
		}
		outcome = OutcomeEnded
	case sc.Command != "" && meta.Type == sc.Command:
		switch {
		case inst.Compensated:
			outcome = OutcomeRepeatedCompensation
		case !inst.Completed:
			// Nothing to undo. The forward action must never run now, not
			// even from a timer it set.
			outcome = OutcomeNullCompensation
			inst.Compensated = true
			if err := c.cancelTimers(p, id); err != nil {
				return true, stopErr(err)
			}
		default:
			return false, done
		}
		if err := c.ack(cl); err != nil {
			return true, failed(err)
		}
	case inst.Ended || inst.Compensated:
		c.count(OutcomeDropped)
		return true, done
	default:
		return false, done
	}
	if err := c.applyCall(p, key, inst, cl, meta.ID); err != nil {
		return true, stopErr(err)
	}
	c.count(outcome)
	return true, done
}

// sagaHandled updates the instance's saga flags after its handler succeeded:
// a command handled is a compensation done; an emitted CompletedBy is the
// forward action done.
func (rt *Runtime) sagaHandled(cl *call, typ string) {
	sc := rt.cfg.Saga
	switch {
	case sc == nil:
	case sc.Command != "" && typ == sc.Command:
		cl.inst.Compensated = true
	case sc.CompletedBy != "" && !cl.inst.Completed:
		for _, r := range cl.emits {
			if headerValue(r, event.HeaderType) == sc.CompletedBy {
				cl.inst.Completed = true
				break
			}
		}
	}
}

// timerHook runs for a due timer, its keys already deleted, before it is
// emitted or its OnTimer handler runs. It reports whether it dropped the
// timer: the timer of an instance whose saga ended or whose step was
// compensated is. An event timer that emits CompletedBy marks its instance
// completed.
func (c *cycle) timerHook(p int32, id, name string, tm state.Timer) (bool, error) {
	if sc := c.rt.cfg.Saga; sc != nil {
		key := state.InstanceKey(id)
		raw, ok, err := c.txn.Get(p, key)
		if err != nil {
			return true, err
		}
		var inst state.Instance
		if ok {
			if inst, err = state.DecodeInstance(raw); err != nil {
				return true, fmt.Errorf("timer %q of instance %q: %w", name, id, err)
			}
		}
		if inst.Ended || inst.Compensated {
			c.count(OutcomeDropped)
			c.work++
			return true, nil
		}
		if tm.Topic != "" && tm.Type == sc.CompletedBy && !inst.Completed {
			inst.Completed = true
			c.buf = inst.Append(c.buf[:0])
			if err := c.txn.Set(p, key, c.buf); err != nil {
				return true, err
			}
		}
	}
	return false, nil
}

// cancelTimers cancels every pending timer of instance id but its expiry
// (Context.Expire).
func (c *cycle) cancelTimers(p int32, id string) error {
	prefix := state.TimerIndexKey(id, "")
	var names []string
	err := c.txn.Scan(p, prefix, state.PrefixEnd(prefix), func(k, _ []byte) (bool, error) {
		if name := string(k[len(prefix):]); name != expireTimer {
			names = append(names, name)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := c.setTimer(p, id, timerOp{name: name, cancel: true}); err != nil {
			return err
		}
	}
	return nil
}

// ack queues the Ack of the command being handled, built from the saga id.
func (c *cycle) ack(cl *call) error {
	sc := c.rt.cfg.Saga
	doc, err := json.Marshal(map[string]string{sc.KeyField: cl.id})
	if err != nil {
		return err
	}
	v, err := c.rt.cfg.Codec.(JSONEncoder).EncodeJSON(c.ctx, sc.AckTopic, sc.Ack, doc)
	if err != nil {
		return fmt.Errorf("build the ack %s of compensation command %s: %w", sc.Ack, sc.Command, err)
	}
	m := cl.derivedMeta(sc.Ack, "")
	cl.emits = append(cl.emits, &kgo.Record{Topic: sc.AckTopic, Key: []byte(cl.id), Value: v, Headers: m.Headers()})
	return nil
}

func (c *cycle) count(outcome string) {
	c.rt.m.outcomes[outcome]++ // added once the interval commits (stepMetrics.committed)
}
