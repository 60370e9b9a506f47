package step_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/step/steptest"
)

// The events of a one-step saga: Start makes the step do its work (Done is
// its completed_by event), Undo is its compensation command and Undone the
// ack. A Start with Slow set answers from a timer.
type (
	Start struct {
		ID   string `avro:"id"`
		Slow bool   `avro:"slow"`
	}
	Done struct {
		ID string `avro:"id"`
	}
	Undo struct {
		ID     string `avro:"id"`
		Reason string `avro:"reason"`
	}
	Undone struct {
		ID   string `avro:"id"`
		Note string `avro:"note"`
	}
)

type work struct {
	Started, Undone int
}

const (
	endedTopic = "t.saga.s.ended"
	// slowDelay is long enough for the test's SagaEnded to reach the step
	// first: a test consumer's fetch takes up to 500 ms to see an output.
	slowDelay = 2 * time.Second
)

func sagaSerde(t *testing.T) *avro.Serde {
	t.Helper()
	s := avro.NewSerde(steptest.NewRegistry())
	for zero, schema := range map[any]string{
		Start{}:  `{"type":"record","name":"Start","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"slow","type":"boolean","default":false}]}`,
		Done{}:   `{"type":"record","name":"Done","namespace":"t","fields":[{"name":"id","type":"string"}]}`,
		Undo{}:   `{"type":"record","name":"Undo","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"reason","type":"string","default":""}]}`,
		Undone{}: `{"type":"record","name":"Undone","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}`,
	} {
		if err := s.Register(zero, schema); err != nil {
			t.Fatal(err)
		}
	}
	if err := saga.Register(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// sagaStep counts the calls of its compensation handler in undos: the
// barrier's answers must not call it.
func sagaStep(undos *atomic.Int64) *step.Step[work] {
	s := step.New[work]("t", "work", step.Inputs("in", "cmds"))
	step.Handle(s, func(c *step.Context[work], ev Start) error {
		w, _ := c.State()
		w.Started++
		c.SetState(w)
		if ev.Slow {
			return c.After(slowDelay, "slow", "out", Done{ID: ev.ID})
		}
		return c.Emit("out", Done{ID: ev.ID})
	})
	step.Handle(s, func(c *step.Context[work], cmd Undo) error {
		undos.Add(1)
		w, _ := c.State()
		w.Undone++
		c.SetState(w)
		return c.Emit("acks", Undone{ID: cmd.ID, Note: "undone by the handler"})
	})
	return s
}

type sagaDriver struct {
	*steptest.Driver
	t     *testing.T
	reg   *prometheus.Registry
	undos *atomic.Int64
}

func startSagaStep(t *testing.T) *sagaDriver {
	t.Helper()
	return startSagaStepKeeping(t, 0)
}

// startSagaStepKeeping starts the step with Saga.Retention set.
func startSagaStepKeeping(t *testing.T, retention time.Duration) *sagaDriver {
	t.Helper()
	return startSagaStepWith(t, step.Saga{EndedTopic: endedTopic, CompletedBy: "t.Done", Command: "t.Undo", Ack: "t.Undone", AckTopic: "acks", KeyField: "id", Retention: retention})
}

// startSagaStepWith starts the step with the saga rules sc.
func startSagaStepWith(t *testing.T, sc step.Saga) *sagaDriver {
	t.Helper()
	undos := &atomic.Int64{}
	reg := prometheus.NewRegistry()
	d, err := steptest.Start(sagaStep(undos), sagaSerde(t), steptest.Topics("out"), steptest.Registerer(reg), steptest.Saga(sc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return &sagaDriver{Driver: d, t: t, reg: reg, undos: undos}
}

func (d *sagaDriver) send(topic, key string, ev any) {
	d.t.Helper()
	if _, err := d.Send(topic, key, ev); err != nil {
		d.t.Fatal(err)
	}
}

func (d *sagaDriver) end(key string) {
	d.t.Helper()
	d.send(endedTopic, key, saga.Ended{SagaID: key, Saga: "s", Status: "COMPENSATED", EndedAt: time.Now()})
}

// next returns the next event on topic and checks its key and Go type.
func next[E any](d *sagaDriver, topic, key string) E {
	d.t.Helper()
	out, err := d.Next(topic)
	if err != nil {
		d.t.Fatal(err)
	}
	ev, ok := out.Value.(E)
	if !ok || out.Key != key {
		d.t.Fatalf("next on %s: %T for %q, want %T for %q", topic, out.Value, out.Key, *new(E), key)
	}
	return ev
}

// waitOutcome waits until troupe_step_events_total{outcome} reaches n.
func (d *sagaDriver) waitOutcome(outcome string, n float64) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.outcomes()[outcome] < n {
		if time.Now().After(deadline) {
			d.t.Fatalf("troupe_step_events_total{outcome=%q} = %v after 10 s, want %v", outcome, d.outcomes()[outcome], n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *sagaDriver) outcomes() map[string]float64 {
	d.t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		d.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "troupe_step_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func (d *sagaDriver) wantOutcomes(want map[string]float64) {
	d.t.Helper()
	if err := d.Runtime().WaitCommit(d.t.Context()); err != nil {
		d.t.Fatal(err)
	}
	got := d.outcomes()
	for k, v := range want {
		if got[k] != v {
			d.t.Errorf("troupe_step_events_total{outcome=%q} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// A forward event that no step of the saga emitted (its ce_source is not
// the emitting step's) is an orphan: its handler does not run, so a lone
// mid-saga event makes the step do nothing; compensation commands still
// come from the coordinator.
func TestOrphanEventsAreNotHandled(t *testing.T) {
	d := startSagaStepWith(t, step.Saga{EndedTopic: endedTopic, CompletedBy: "t.Done", Command: "t.Undo", Ack: "t.Undone", AckTopic: "acks", KeyField: "id",
		Trigger: "t.Order", Sources: map[string][]string{"t.Start": {"t.upstream"}}})
	d.send("in", "lone", Start{ID: "lone"}) // from "steptest", not t.upstream
	d.send("cmds", "lone", Undo{ID: "lone"})
	if a := next[Undone](d, "acks", "lone"); a.Note != "" {
		t.Errorf("ack %+v, want the runtime's null compensation (the orphan Start never ran)", a)
	}
	d.wantOutcomes(map[string]float64{step.OutcomeOrphan: 1, step.OutcomeNullCompensation: 1, step.OutcomeProcessed: 0})
}

// A command for an instance the step never completed is acked by the
// runtime with no effect; the forward input that arrives after it (a
// "hanging" one) never runs.
func TestNullCompensationAndHanging(t *testing.T) {
	d := startSagaStep(t)
	d.send("cmds", "a", Undo{ID: "a"})
	ack := next[Undone](d, "acks", "a")
	if ack != (Undone{ID: "a"}) {
		t.Errorf("null compensation ack %+v, want the defaults built from the saga id", ack)
	}
	d.send("in", "a", Start{ID: "a"})
	d.send("in", "b", Start{ID: "b"})
	next[Done](d, "out", "b") // not a's: its Start was dropped
	if n := d.undos.Load(); n != 0 {
		t.Errorf("compensation handler called %d times for a null compensation", n)
	}
	if w, ok, err := steptest.State[work](d.Driver, "a"); err != nil || ok {
		t.Errorf("state of a = %+v, %v, %v: the hanging Start must have no effect", w, ok, err)
	}
	d.wantOutcomes(map[string]float64{step.OutcomeNullCompensation: 1, step.OutcomeDropped: 1, step.OutcomeProcessed: 1})
}

// A completed instance is compensated by its handler once; a repeated
// command is acked again by the runtime, without a second effect.
func TestRepeatedCompensation(t *testing.T) {
	d := startSagaStep(t)
	d.send("in", "c", Start{ID: "c"})
	next[Done](d, "out", "c")
	for range 2 {
		d.send("cmds", "c", Undo{ID: "c"})
	}
	if a := next[Undone](d, "acks", "c"); a.Note != "undone by the handler" {
		t.Errorf("first ack %+v, want the handler's", a)
	}
	if a := next[Undone](d, "acks", "c"); a.Note != "" {
		t.Errorf("second ack %+v, want the runtime's", a)
	}
	if n := d.undos.Load(); n != 1 {
		t.Errorf("compensation handler called %d times, want 1", n)
	}
	w, _, err := steptest.State[work](d.Driver, "c")
	if err != nil || w != (work{Started: 1, Undone: 1}) {
		t.Errorf("state of c = %+v (%v), want started and undone once", w, err)
	}
	// Compensated: a late forward input is dropped.
	d.send("in", "c", Start{ID: "c"})
	d.send("in", "c2", Start{ID: "c2"})
	next[Done](d, "out", "c2")
	d.wantOutcomes(map[string]float64{step.OutcomeRepeatedCompensation: 1, step.OutcomeDropped: 1})
}

// SagaEnded marks the instance ended and cancels its timers: the slow
// answer never comes, later inputs are dropped, and compensation commands
// still run: a null one for the instance that never completed, the
// handler for one that did.
func TestSagaEnded(t *testing.T) {
	d := startSagaStep(t)
	d.send("in", "slow", Start{ID: "slow", Slow: true})
	due := time.Now().Add(slowDelay)
	d.send("in", "done", Start{ID: "done"})
	next[Done](d, "out", "done")
	d.end("slow")
	d.end("done")
	// The ends and the inputs are on different topics, read in no set
	// order: wait for the ends to be applied before the input they drop.
	d.waitOutcome(step.OutcomeEnded, 2)
	d.send("in", "slow", Start{ID: "slow"})            // dropped
	time.Sleep(time.Until(due) + 200*time.Millisecond) // the cancelled timer would have fired by now
	d.send("in", "marker", Start{ID: "marker"})
	next[Done](d, "out", "marker")

	d.send("cmds", "slow", Undo{ID: "slow"})
	if a := next[Undone](d, "acks", "slow"); a.Note != "" {
		t.Errorf("ack of the never completed instance %+v, want the runtime's null compensation", a)
	}
	d.send("cmds", "done", Undo{ID: "done"})
	if a := next[Undone](d, "acks", "done"); a.Note == "" {
		t.Errorf("ack of the completed instance %+v, want the handler's after the end", a)
	}
	if n := d.undos.Load(); n != 1 {
		t.Errorf("compensation handler called %d times, want 1", n)
	}
	d.wantOutcomes(map[string]float64{step.OutcomeEnded: 2, step.OutcomeDropped: 1, step.OutcomeNullCompensation: 1})
}

// With a retention, an ended instance is kept (its inputs dropped) for that
// long, then deleted: a later event starts it afresh. A null compensation
// after the end, which cancels the instance's timers, does not cancel its
// expiry.
func TestSagaRetentionExpires(t *testing.T) {
	const retention = 3 * time.Second // long enough for the checks while kept
	d := startSagaStepKeeping(t, retention)
	d.send("in", "a", Start{ID: "a"})
	next[Done](d, "out", "a")
	d.end("a")
	d.end("n")
	d.send("cmds", "n", Undo{ID: "n"}) // never completed: a null compensation
	next[Undone](d, "acks", "n")
	d.waitOutcome(step.OutcomeEnded, 2) // the ends are on another topic than the input
	d.send("in", "a", Start{ID: "a"})   // ended and kept: dropped
	d.wantOutcomes(map[string]float64{step.OutcomeEnded: 2, step.OutcomeDropped: 1, step.OutcomeNullCompensation: 1})
	if w, ok, err := steptest.State[work](d.Driver, "a"); err != nil || !ok || w.Started != 1 {
		t.Fatalf("state of a while kept: %+v %v %v", w, ok, err)
	}

	waitStart := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, okA, errA := steptest.State[work](d.Driver, "a")
		_, okN, errN := steptest.State[work](d.Driver, "n")
		if errA != nil || errN != nil {
			t.Fatal(errA, errN)
		}
		if !okA && !okN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances still there %s after their retention of %s (a: %v, n: %v)", 10*time.Second, retention, okA, okN)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("expired after %s", time.Since(waitStart))
	if got := counterOf(t, d.reg, "troupe_step_instances_expired_total"); got != 2 {
		t.Errorf("troupe_step_instances_expired_total = %v, want 2", got)
	}
	d.send("in", "a", Start{ID: "a"}) // forgotten: a new instance
	next[Done](d, "out", "a")
	if err := d.Runtime().WaitCommit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w, ok, err := steptest.State[work](d.Driver, "a"); err != nil || !ok || w.Started != 1 {
		t.Errorf("state of a after its expiry and a new Start: %+v %v %v, want Started 1", w, ok, err)
	}
}

func counterOf(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// A completion emitted by a timer counts: the instance's compensation runs
// the handler.
func TestTimerCompletion(t *testing.T) {
	d := startSagaStep(t)
	d.send("in", "f", Start{ID: "f", Slow: true})
	next[Done](d, "out", "f")
	d.send("cmds", "f", Undo{ID: "f"})
	if a := next[Undone](d, "acks", "f"); a.Note == "" {
		t.Errorf("ack %+v, want the handler's: the timer's Done completed the step", a)
	}
}

// A raw handler sees every type without a typed handler; SetTimer calls
// OnTimer, which emits a raw value; a replaced timer fires once.
func TestRawHandlerAndTimerCallback(t *testing.T) {
	serde := sagaSerde(t)
	type seen struct {
		Types []string
		Fired int
	}
	s := step.New[seen]("t", "raw", step.Inputs("in"))
	step.Handle(s, func(c *step.Context[seen], ev Done) error { return nil })
	step.HandleRaw(s, func(c *step.Context[seen], typ string, value []byte) error {
		st, _ := c.State()
		st.Types = append(st.Types, typ)
		c.SetState(st)
		if c.Topic() != "in" || c.Offset() < 0 || c.Time().IsZero() {
			t.Errorf("raw handler context: topic %q offset %d time %v", c.Topic(), c.Offset(), c.Time())
		}
		c.SetTimer("tick", time.Now().Add(time.Hour))
		c.SetTimer("tick", time.Now().Add(300*time.Millisecond)) // replaces the first
		return nil
	})
	step.OnTimer(s, func(c *step.Context[seen], name string) error {
		st, _ := c.State()
		st.Fired++
		c.SetState(st)
		v, err := serde.Encode(c.Context(), "out", Done{ID: c.Key() + "/" + name})
		if err != nil {
			return err
		}
		c.EmitRaw("out", "t.Done", v)
		return nil
	})
	d, err := steptest.Start(s, serde, steptest.Topics("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, ev := range []any{Done{ID: "x"}, Start{ID: "x"}, Undo{ID: "x"}} {
		if _, err := d.Send("in", "x", ev); err != nil {
			t.Fatal(err)
		}
	}
	out, err := d.Next("out")
	if err != nil {
		t.Fatal(err)
	}
	if out.Value != (Done{ID: "x/tick"}) || out.Meta.Type != "t.Done" || out.Meta.Timer != "tick" {
		t.Errorf("timer emitted %+v (%s, timer %q)", out.Value, out.Meta.Type, out.Meta.Timer)
	}
	time.Sleep(200 * time.Millisecond)
	st, _, err := steptest.State[seen](d, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Types) != 2 || st.Types[0] != "t.Start" || st.Types[1] != "t.Undo" || st.Fired != 1 {
		t.Errorf("state %+v: want the raw handler to see t.Start and t.Undo (not t.Done, which has a typed handler) and one timer", st)
	}
}
