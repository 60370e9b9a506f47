package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/metrics"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
)

// Encoder builds an event from a JSON document, every field it lacks taking
// its schema default: the coordinator builds compensation commands from the
// saga id alone. *avro.Serde implements it.
type Encoder interface {
	EncodeJSON(ctx context.Context, topic, fullName string, doc []byte) ([]byte, error)
}

// Coordinator is the coordinator of one saga as a step (README: Sagas): the
// consumer group <app>.saga.<saga> over every business topic of the saga,
// with an Instance as each instance's state (so its changelog is
// <app>.saga.<saga>.changelog). It feeds the events and its durable timers
// (deadline, compensation timeout) to a Machine and carries out the
// actions in the same transaction: compensation commands to the command's
// topic, SagaEnded to the saga's ended topic. It watches every step's DLQ
// and retry topic too (Machine.OnRecovery), so those must exist (troupe
// topics apply creates them).
//
// Run its Step with step.NewRuntime, without Config.Saga; the codec must
// know Ended (Register) and be an Encoder (an *avro.Serde is both). Read
// its instances with NewStore.
type Coordinator struct {
	t     *topology.Topology
	m     *Machine
	enc   Encoder
	def   *step.Step[Instance]
	met   *coordMetrics
	cmds  map[string]bool
	plain sync.Map // command type → true: its schema has no "reason" field
	// watched maps each step's DLQ and retry topic to the step.
	watched map[string]string
}

// StepName is the coordinator's step name under the app, saga.<saga>: its
// group is <app>.saga.<saga>.
func StepName(t *topology.Topology) string { return "saga." + t.Saga }

// NewCoordinator builds the coordinator of t's saga. Its metrics go to reg
// (nil: nowhere).
func NewCoordinator(t *topology.Topology, enc Encoder, reg prometheus.Registerer) *Coordinator {
	c := &Coordinator{t: t, m: NewMachine(t), enc: enc, cmds: map[string]bool{}, met: newCoordMetrics(reg, t)}
	for _, s := range t.Steps {
		if s.Compensation.Command != "" {
			c.cmds[s.Compensation.Command] = true
		}
	}
	var topics []string
	for _, tp := range t.Topics {
		topics = append(topics, tp.Name)
	}
	c.def = step.New[Instance](t.App, StepName(t), step.Inputs(topics...))
	step.HandleRaw(c.def, func(sc *step.Context[Instance], typ string, _ []byte) error { return c.onEvent(sc, typ) })
	step.OnTimer(c.def, c.onTimer)
	c.watched = map[string]string{}
	var side []string
	for _, s := range t.Steps {
		for _, tp := range []string{t.DLQ(s.Name), t.RetryTopic(s.Name)} {
			c.watched[tp] = s.Name
			side = append(side, tp)
		}
	}
	step.Watch(c.def, c.onRecovery, side...)
	return c
}

// Step is the coordinator's step definition.
func (c *Coordinator) Step() *step.Step[Instance] { return c.def }

// snapshot is what carry compares to count compensation outcomes.
type snapshot struct {
	started     bool
	compensated int
	pending     string
}

func snap(inst *Instance) snapshot {
	if inst == nil {
		return snapshot{}
	}
	s := snapshot{started: inst.Started(), compensated: len(inst.Compensated)}
	if inst.Pending != nil {
		s.pending = inst.Pending.Step
	}
	return s
}

func (c *Coordinator) onEvent(sc *step.Context[Instance], typ string) error {
	stored, known := sc.State()
	var inst *Instance
	if known {
		inst = &stored
	}
	if !c.m.Relevant(typ) && !c.cmds[typ] {
		return nil // another saga's event
	}
	before := snap(inst)
	wasStarted := inst != nil && inst.Started()
	meta := sc.Meta()
	inst, acts := c.m.OnEvent(sc.Key(), inst, Event{Type: typ, Time: sc.Time(), Now: time.Now(), Topic: sc.Topic(), Partition: sc.Partition(), Offset: sc.Offset(),
		Source: meta.Source, ID: meta.ID, CausationID: meta.CausationID, Timer: meta.Timer})
	if !before.started && inst.Started() {
		inst.TraceID = sc.TraceID() // its trigger's
	}
	sc.SetState(*inst)
	if !wasStarted && inst.Started() {
		c.met.started.WithLabelValues(c.t.App, c.t.Saga).Inc()
	}
	return c.carry(sc, inst, before, acts)
}

func (c *Coordinator) onTimer(sc *step.Context[Instance], name string) error {
	inst, known := sc.State()
	if !known {
		return nil
	}
	before := snap(&inst)
	acts := c.m.OnTimer(&inst, name, time.Now())
	sc.SetState(inst)
	return c.carry(sc, &inst, before, acts)
}

// onRecovery records a record of a step's DLQ or retry topic in its
// instance's history: a dead letter, or its replay or discard. Records of
// instances the coordinator has not seen start nothing, and malformed dead
// letters and events coming back from a park are skipped.
func (c *Coordinator) onRecovery(sc *step.Context[Instance], r *kgo.Record) error {
	inst, known := sc.State()
	if !known || !inst.Started() {
		return nil
	}
	name := c.watched[r.Topic]
	rec := Recovery{Time: r.Timestamp, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	if r.Topic == c.t.DLQ(name) {
		d, err := dlq.Parse(r)
		if err != nil {
			sc.Logger().Warn().Err(err).Msg("record in a DLQ is not a troupe dead letter; not recorded in the saga history") // the logger names its topic, partition and offset
			return nil
		}
		rec.Kind, rec.Time = EntryDeadLetter, d.FailedAt
		rec.DeadLetter = DeadLetter{Step: name, Error: d.Error, Attempts: d.Attempts, FailedAt: d.FailedAt, Partition: r.Partition, Offset: r.Offset}
		if d.Event.Type != "" {
			rec.DeadLetter.Event = c.t.ShortName(d.Event.Type)
		}
	} else {
		from, discard, ok := dlq.Settles(r)
		if !ok || from.Topic != c.t.DLQ(name) {
			return nil
		}
		rec.Kind = EntryReplayed
		if discard {
			rec.Kind = EntryDiscarded
		}
		rec.DeadLetter = DeadLetter{Step: name, Partition: from.Partition, Offset: from.Offset}
	}
	c.m.OnRecovery(&inst, rec)
	sc.SetState(inst)
	return nil
}

// carry carries out a transition's actions.
func (c *Coordinator) carry(sc *step.Context[Instance], inst *Instance, before snapshot, acts []Action) error {
	for _, s := range inst.Compensated[min(before.compensated, len(inst.Compensated)):] {
		c.met.comps.WithLabelValues(c.t.App, c.t.Saga, s, "acked").Inc()
	}
	for _, a := range acts {
		switch a := a.(type) {
		case Compensate:
			topic, ok := c.t.TopicOf(a.Command)
			if !ok {
				return step.Permanent(fmt.Errorf("compensation command %s of step %s is on no topic of the topology", a.Command, a.Step))
			}
			v, err := c.command(sc.Context(), topic, a.Command, sc.Key(), inst.Reason)
			if err != nil {
				return err
			}
			sc.EmitRaw(topic, a.Command, v)
			outcome := "sent"
			if a.Attempt > 1 {
				outcome = "resent"
			}
			c.met.comps.WithLabelValues(c.t.App, c.t.Saga, a.Step, outcome).Inc()
		case Orphaned:
			c.met.orphans.WithLabelValues(c.t.App, c.t.Saga, c.t.ShortName(a.Type)).Inc()
		case Forget:
			// Its trigger did not come within the orphan window: forget
			// the orphans and what the runtime keeps of the id.
			sc.DeleteState()
			sc.Expire(time.Now())
		case SetTimer:
			sc.SetTimer(a.Name, a.At)
		case CancelTimer:
			sc.Cancel(a.Name)
		case End:
			ended := Ended{SagaID: inst.ID, Saga: c.t.Saga, Status: string(a.Status), Reason: a.Reason, EndedAt: inst.EndedAt}
			if err := sc.Emit(c.t.EndedTopic(), ended); err != nil {
				return fmt.Errorf("emit SagaEnded (register saga.Ended with the serde: saga.Register): %w", err)
			}
			c.met.duration.WithLabelValues(c.t.App, c.t.Saga, string(a.Status)).Observe(max(inst.EndedAt.Sub(inst.StartedAt).Seconds(), 0))
			if c.t.Retention > 0 {
				// Late acks and dead letters still find it meanwhile.
				sc.Expire(time.Now().Add(c.t.Retention))
			}
			if a.Status == Failed && before.pending != "" {
				c.met.comps.WithLabelValues(c.t.App, c.t.Saga, before.pending, "failed").Inc()
			}
		}
	}
	return nil
}

// command encodes a compensation command for instance id: the key field,
// and the reason when the command's schema has a "reason" field (the
// example's do), every other field its default.
func (c *Coordinator) command(ctx context.Context, topic, typ, id, reason string) ([]byte, error) {
	if _, plain := c.plain.Load(typ); !plain {
		doc, _ := json.Marshal(map[string]string{c.t.Key: id, "reason": reason})
		v, err := c.enc.EncodeJSON(ctx, topic, typ, doc)
		var fe *avro.FieldError
		if !errors.As(err, &fe) || fe.Path != "reason" {
			if err != nil {
				return nil, fmt.Errorf("build compensation command %s for %q: %w", typ, id, err)
			}
			return v, nil
		}
		c.plain.Store(typ, true) // no reason field: build it from the key alone from now on
	}
	doc, _ := json.Marshal(map[string]string{c.t.Key: id})
	v, err := c.enc.EncodeJSON(ctx, topic, typ, doc)
	if err != nil {
		return nil, fmt.Errorf("build compensation command %s for %q (every field but %s needs a default): %w", typ, id, c.t.Key, err)
	}
	return v, nil
}

type coordMetrics struct {
	started  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	comps    *prometheus.CounterVec
	orphans  *prometheus.CounterVec
}

func newCoordMetrics(reg prometheus.Registerer, t *topology.Topology) *coordMetrics {
	m := &coordMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "saga", Name: "started_total",
			Help: "Instances started (their trigger handled); with troupe_saga_duration_seconds_count, which counts those ended, the difference is those running.",
		}, []string{"app", "saga"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "saga", Name: "duration_seconds",
			Help:    "Time from an instance's first event to its end, by outcome: COMPLETED, COMPENSATED or FAILED.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"app", "saga", "outcome"}),
		comps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "saga", Name: "compensations_total",
			Help: "Compensations by step and outcome: sent, resent (no ack within the timeout), acked, failed (no ack after the policy's attempts).",
		}, []string{"app", "saga", "step", "outcome"}),
		orphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "saga", Name: "orphans_total",
			Help: "Events of instances the coordinator had not seen that are not the saga's trigger, by event type: they start no saga (GET /api/orphans lists those kept).",
		}, []string{"app", "saga", "type"}),
	}
	if reg != nil {
		m.started = metrics.Register(reg, m.started)
		m.started.WithLabelValues(t.App, t.Saga)
		m.duration = metrics.Register(reg, m.duration)
		m.comps = metrics.Register(reg, m.comps)
		m.orphans = metrics.Register(reg, m.orphans)
		// Every series from the start, so that rates work from zero.
		for _, s := range t.Steps {
			if s.Compensation.Command == "" {
				continue
			}
			for _, o := range []string{"sent", "resent", "acked", "failed"} {
				m.comps.WithLabelValues(t.App, t.Saga, s.Name, o)
			}
		}
		for _, tp := range t.Topics {
			for _, e := range tp.Events {
				if t.FullName(e) != t.Trigger {
					m.orphans.WithLabelValues(t.App, t.Saga, t.ShortName(e))
				}
			}
		}
	}
	return m
}
