package saga

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/troupehq/troupe/pkg/topology"
)

// Status is where a saga instance is in its life.
type Status string

// The statuses of a saga (README: Sagas). COMPLETED, COMPENSATED and FAILED are final.
const (
	Running      Status = "RUNNING"
	Completed    Status = "COMPLETED"
	Compensating Status = "COMPENSATING"
	Compensated  Status = "COMPENSATED"
	Failed       Status = "FAILED"
)

// Final reports whether s is an end state.
func (s Status) Final() bool { return s == Completed || s == Compensated || s == Failed }

// ReasonTimeout is the reason of an instance that passed its deadline.
const ReasonTimeout = "timeout"

// Timer names the coordinator uses; at most one of each per instance.
const (
	TimerDeadline     = "deadline"
	TimerCompensation = "compensation"
	// TimerOrphans forgets the orphans of an id whose trigger never came,
	// OrphanWindow after the first of them.
	TimerOrphans = "orphans"
)

// Orphans: events of an instance the coordinator has never seen that are
// not the saga's trigger. Such an event starts no saga (no deadline, no
// compensation, no SagaEnded, nothing in the saga counts): as the README's Sagas section says, a saga
// begins only with its trigger. Otherwise a lone ShipmentScheduled, forged or
// misrouted, would be a COMPLETED saga whose steps never ran.
//
// Yet the coordinator reads every topic of the saga and Kafka orders records
// only within one partition of one topic, so a real instance's
// PaymentAuthorized may be read before its OrderPlaced. The orphans of an id
// are therefore kept (at most OrphanLimit of them, for OrphanWindow) and,
// when the trigger comes, each orphan the trigger caused, directly or through
// another adopted orphan (its ce_causationid is the ce_id of the trigger or of
// that orphan: what every troupe step writes), is applied to the new saga,
// in the order it was read, with a history note that says so; so is an
// orphan that names no cause (a producer that sets no ce_causationid) and
// happened (ce_time) after the trigger, as it would have been, read in
// order. An orphan that names another cause, or none and happened before the
// trigger (a forgery, a test record, a key reused), or that a step's
// forward action emits but whose ce_source is not that step's (the steps
// do not act on it either: step.Saga.Sources), is never applied: it stays
// listed among the instance's orphans. Adoption keeps the property
// that matters: an instance reaches COMPLETED only after its trigger, by
// events that follow it.
const (
	// OrphanLimit bounds the orphans kept per id; the first are kept, the
	// later only counted (troupe_saga_orphans_total).
	OrphanLimit = 16
	// OrphanWindow is how long the orphans of an id whose trigger has not
	// come are kept, from the first one: far longer than any skew between
	// the saga's topics as the coordinator reads them, even when it catches
	// up on a backlog. With OrphanLimit it bounds the orphans a partition
	// keeps by the rate at which they arrive.
	OrphanWindow = time.Hour
)

// orphanWindow is OrphanWindow, shorter in tests.
var orphanWindow = OrphanWindow

// HistoryLimit bounds the history kept per instance: the first entries (how
// it started) and the last ones (how it ended) matter most, so the oldest
// entries after the first are dropped.
const HistoryLimit = 64

// Instance is the coordinator's view of one saga instance.
type Instance struct {
	ID          string    `json:"id"`
	Saga        string    `json:"saga"`
	Status      Status    `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	Error       string    `json:"error,omitempty"`
	Completed   []string  `json:"completed"`
	Compensated []string  `json:"compensated"`
	StartedAt   time.Time `json:"startedAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	EndedAt     time.Time `json:"endedAt,omitzero"`
	// TraceID is the OpenTelemetry trace of the saga (32 hex digits), as
	// its trigger carried it: its traceparent's, or, with tracing on
	// (step.Config.Tracing), the trace the coordinator put it in. Empty
	// when neither.
	TraceID string `json:"traceId,omitempty"`
	// Pending is the compensation awaiting its ack, if any.
	Pending *Pending `json:"pending,omitempty"`
	// Queue holds the steps still to compensate after Pending, in order.
	Queue []string `json:"queue,omitempty"`
	// DeadLetters are the instance's events in its steps' dead-letter
	// queues that no replay or discard has settled yet: while one is
	// outstanding, the step parks the instance's later events.
	DeadLetters []DeadLetter `json:"deadLetters,omitempty"`
	History     []Entry      `json:"history"`
	// Orphans are events of the id that no saga took: all of them while
	// its trigger has not come (Status is empty then: the id has no saga,
	// and the API and stats do not count it as one), and afterwards those
	// the trigger did not cause, and a step's events that the step did not
	// produce (another ce_source).
	Orphans []Orphan `json:"orphans,omitempty"`
}

// Started reports whether the instance has a saga: its trigger came. An
// instance that is not started only holds orphans.
func (i *Instance) Started() bool { return i.Status != "" }

// Orphan is an event of an instance the coordinator had not seen, that is
// not the saga's trigger: it started nothing.
type Orphan struct {
	// ID is the instance id (the record key).
	ID string `json:"id"`
	// Type is the event type (short name).
	Type      string `json:"type"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Source is the event's ce_source: who produced it.
	Source string `json:"source,omitempty"`
	// Time is the event's ce_time; SeenAt when the coordinator read it.
	Time   time.Time `json:"time"`
	SeenAt time.Time `json:"seenAt"`
	// EventID and CausationID are its ce_id and ce_causationid, by which
	// a late trigger adopts it.
	EventID     string `json:"eventId,omitempty"`
	CausationID string `json:"causationId,omitempty"`
}

// DeadLetter is an event of the instance that a step gave up on.
type DeadLetter struct {
	Step string `json:"step"`
	// Event is the failed event's type (short name); empty when the
	// record was undecodable.
	Event    string    `json:"event,omitempty"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	FailedAt time.Time `json:"failedAt"`
	// Partition and Offset are its place in the step's DLQ, what
	// `troupe dlq replay|discard --partition --offset` take.
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// History entry types of dead letters: a step dead-lettered an event of the
// instance, and an operator replayed or discarded it (troupe dlq).
const (
	EntryDeadLetter = "DeadLetter"
	EntryReplayed   = "DeadLetterReplayed"
	EntryDiscarded  = "DeadLetterDiscarded"
)

// Recovery is a dead letter of one of the saga's steps, or the replay or
// discard of one, as the coordinator reads it from the step's DLQ or retry
// topic.
type Recovery struct {
	Kind string // EntryDeadLetter, EntryReplayed or EntryDiscarded
	// DeadLetter is the dead letter; a replay or discard fills only Step,
	// Partition and Offset.
	DeadLetter DeadLetter
	Time       time.Time
	// Topic, Partition and Offset are the record's place: the step's DLQ
	// or retry topic.
	Topic     string
	Partition int32
	Offset    int64
}

// Pending is a compensation command sent and not yet acknowledged.
type Pending struct {
	Step     string    `json:"step"`
	Attempts int       `json:"attempts"`
	SentAt   time.Time `json:"sentAt"`
}

// Entry is one line of an instance's history.
type Entry struct {
	Type string    `json:"type"`
	Step string    `json:"step,omitempty"`
	Time time.Time `json:"time"`
	// Topic, Partition and Offset are the event's record; Offset is -1 for
	// a timer, and Topic empty for entries recorded before topics were.
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Note      string `json:"note,omitempty"`
}

// SortHistory puts the history in the order things happened: by time,
// entries of the same time in the order the coordinator recorded them. The
// coordinator reads the saga's topics in no set order between them (a
// step's output may be read before the input that caused it), and records
// each entry as it reads it.
func (i *Instance) SortHistory() {
	slices.SortStableFunc(i.History, func(a, b Entry) int { return a.Time.Compare(b.Time) })
}

// Action is what the coordinator must do after a transition. The runtime
// carries actions out inside the same transaction as the state change.
type Action interface{ isAction() }

// Compensate asks the runtime to emit a step's compensation command.
type Compensate struct {
	Step    string
	Command string // full event type
	Attempt int
}

// SetTimer asks for a durable timer; a timer of the same name is replaced.
type SetTimer struct {
	Name string
	At   time.Time
}

// CancelTimer cancels a durable timer.
type CancelTimer struct{ Name string }

// End reports that the instance reached a final status: emit SagaEnded.
type End struct {
	Status Status
	Reason string
}

// Orphaned reports that an event became an orphan: count it.
type Orphaned struct {
	Type string // full event type
}

// Forget asks the runtime to delete the instance: it held only orphans and
// its trigger did not come within OrphanWindow.
type Forget struct{}

func (Compensate) isAction()  {}
func (SetTimer) isAction()    {}
func (CancelTimer) isAction() {}
func (End) isAction()         {}
func (Orphaned) isAction()    {}
func (Forget) isAction()      {}

// Machine applies a topology's rules to instances. It is pure: no I/O, no
// clock; the caller passes the event time and carries out the actions.
type Machine struct {
	saga        string
	trigger     string
	completes   map[string]bool
	fails       map[string]bool
	completedBy map[string]string // event type → step it completes
	ackOf       map[string]string // compensation ack type → step
	emitter     map[string]string // event type → step that emits it
	forward     map[string]string // event type → step whose forward action emits it (not acks)
	soleInput   map[string]string // step → its input event type, for steps with exactly one
	command     map[string]string // step → compensation command
	commandOf   map[string]string // compensation command → step
	deadline    time.Duration
	compTimeout time.Duration
	compTries   int
	short       func(string) string
	full        func(string) string
	window      time.Duration // orphanWindow
	// sources maps each event a step's forward action emits (but the
	// trigger) to the ce_source of those steps, <app>.<step>: the only
	// producers the steps themselves take it from (step.Saga.Sources).
	sources map[string][]string
}

// NewMachine derives the coordinator's rules from a topology.
func NewMachine(t *topology.Topology) *Machine {
	m := &Machine{
		saga:        t.Saga,
		trigger:     t.Trigger,
		completes:   map[string]bool{},
		fails:       map[string]bool{},
		completedBy: map[string]string{},
		ackOf:       map[string]string{},
		emitter:     map[string]string{},
		forward:     map[string]string{},
		soleInput:   map[string]string{},
		command:     map[string]string{},
		commandOf:   map[string]string{},
		deadline:    t.Deadline,
		compTimeout: t.Compensate.Timeout,
		compTries:   t.Compensate.Attempts,
		short:       t.ShortName,
		full:        t.FullName,
		window:      orphanWindow,
		sources:     map[string][]string{},
	}
	for _, e := range t.CompletesOn {
		m.completes[e] = true
	}
	for _, e := range t.FailsOn {
		m.fails[e] = true
	}
	for _, s := range t.Steps {
		for _, e := range s.Emits {
			m.emitter[e] = s.Name
			m.forward[e] = s.Name
			if e != t.Trigger {
				m.sources[e] = append(m.sources[e], t.Group(s.Name))
			}
		}
		if len(s.On) == 1 {
			m.soleInput[s.Name] = s.On[0]
		}
		if s.CompletedBy != "" {
			m.completedBy[s.CompletedBy] = s.Name
		}
		if c := s.Compensation; c.Command != "" {
			m.ackOf[c.Ack] = s.Name
			m.command[s.Name] = c.Command
			m.commandOf[c.Command] = s.Name
			m.emitter[c.Ack] = s.Name
		}
	}
	return m
}

// Event is one event of a saga as the coordinator sees it.
type Event struct {
	Type string // full Avro name
	// Time is when the event happened (its ce_time): the time of its
	// history entry, and of the instance's start and end.
	Time time.Time
	// Now is when the coordinator handles it: timers (deadline,
	// compensation timeout) count from it, so that a coordinator catching
	// up on a backlog does not time out instances whose completion is
	// further down the backlog. Zero means Time.
	Now       time.Time
	Topic     string
	Partition int32
	Offset    int64
	// Source, ID and CausationID are its ce_source, ce_id and
	// ce_causationid: what an orphan keeps, and how a late trigger
	// recognises the orphans it caused.
	Source      string
	ID          string
	CausationID string
	// Timer is the step timer that emitted it (event.HeaderTimer): its
	// history entry notes it, for the wait to show.
	Timer string
}

// Relevant reports whether the coordinator tracks events of this type.
func (m *Machine) Relevant(typ string) bool {
	_, emitted := m.emitter[typ]
	return typ == m.trigger || emitted || m.completes[typ] || m.fails[typ]
}

// Starts reports whether an event of this type starts an instance: only
// the trigger does. Any other event of an instance not started is an
// orphan.
func (m *Machine) Starts(typ string) bool { return typ == m.trigger }

// implied returns the steps that must have completed for an event of this
// type to exist, earliest first. A step with a single input event type
// emits only after consuming an event of that type; if that type is another
// step's completed_by, that step completed before. The coordinator may read
// ShipmentFailed before InventoryReserved (they are on different topics);
// knowing inventory completed keeps the compensation in reverse order.
func (m *Machine) implied(typ string) []string {
	var chain []string
	for s := m.forward[typ]; s != "" && len(chain) <= len(m.soleInput); {
		prev, ok := m.completedBy[m.soleInput[s]]
		if !ok {
			break
		}
		chain = append([]string{prev}, chain...)
		s = prev
	}
	return chain
}

// OnEvent applies ev to inst (nil for an unknown instance) and returns the
// updated instance and the actions to carry out. An event of an instance
// not started that is not the trigger becomes one of its orphans; the
// trigger starts the instance and adopts the orphans it caused.
func (m *Machine) OnEvent(id string, inst *Instance, ev Event) (*Instance, []Action) {
	if ev.Now.IsZero() {
		ev.Now = ev.Time
	}
	if inst == nil {
		inst = &Instance{ID: id, Saga: m.saga}
	}
	var acts []Action
	trigger := false
	switch {
	case inst.Started() && !m.fromItsStep(ev.Type, ev.Source):
		return inst, m.foreign(inst, ev)
	case inst.Started():
		acts = m.apply(inst, ev, "")
	case ev.Type != m.trigger:
		return inst, m.orphan(inst, ev)
	default:
		inst.Status, inst.StartedAt, inst.Completed, inst.Compensated = Running, ev.Time, []string{}, []string{}
		if m.deadline > 0 {
			acts = append(acts, SetTimer{Name: TimerDeadline, At: ev.Now.Add(m.deadline)})
		}
		if len(inst.Orphans) > 0 {
			acts = append(acts, CancelTimer{Name: TimerOrphans})
		}
		acts = append(acts, m.apply(inst, ev, "")...)
		trigger = true
	}
	acts = append(acts, m.adopt(inst, ev, trigger)...)
	return inst, dedupe(acts)
}

// foreign records ev, a step's event that the step did not produce (its
// ce_source is another's), in the history of inst, which is started, and
// keeps it among its orphans: applying it would complete a step, or the
// saga, for work no step did (the steps do not act on it either).
func (m *Machine) foreign(inst *Instance, ev Event) []Action {
	step := m.emitter[ev.Type]
	note := fmt.Sprintf("not applied: its ce_source %q is not the step that emits it (%s), which did not act on it either; kept among the orphans",
		ev.Source, strings.Join(m.sources[ev.Type], ", "))
	m.record(inst, Entry{Type: m.short(ev.Type), Step: step, Time: ev.Time, Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset, Note: note})
	acts := []Action{Orphaned{Type: ev.Type}}
	if len(inst.Orphans) < OrphanLimit {
		inst.Orphans = append(inst.Orphans, m.orphanOf(inst.ID, ev))
	}
	return acts
}

// orphanOf is ev as an orphan of instance id.
func (m *Machine) orphanOf(id string, ev Event) Orphan {
	return Orphan{
		ID: id, Type: m.short(ev.Type), Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset,
		Source: ev.Source, Time: ev.Time, SeenAt: ev.Now, EventID: ev.ID, CausationID: ev.CausationID,
	}
}

// orphan keeps ev among the orphans of inst, which is not started.
func (m *Machine) orphan(inst *Instance, ev Event) []Action {
	acts := []Action{Orphaned{Type: ev.Type}}
	if len(inst.Orphans) == 0 {
		acts = append(acts, SetTimer{Name: TimerOrphans, At: ev.Now.Add(m.window)})
	}
	if len(inst.Orphans) < OrphanLimit {
		inst.Orphans = append(inst.Orphans, m.orphanOf(inst.ID, ev))
	}
	return acts
}

// adopt applies to inst the orphans that ev caused, and those that they
// caused in turn, in the order they were read. When ev is the trigger, it
// also adopts the orphans that name no cause (a producer that sets no
// ce_causationid) but happened after it: read in order, they would have
// been applied to the saga just the same.
func (m *Machine) adopt(inst *Instance, ev Event, trigger bool) []Action {
	var acts []Action
	causes := map[string]string{} // ce_id → short type of the events applied
	if ev.ID != "" {
		causes[ev.ID] = m.short(ev.Type)
	}
	for changed := true; changed && len(inst.Orphans) > 0; {
		changed = false
		for i := 0; i < len(inst.Orphans); {
			o := inst.Orphans[i]
			var note string
			switch cause, ok := causes[o.CausationID]; {
			case !m.fromItsStep(m.full(o.Type), o.Source):
				// No step acted on it either (they take a step's event
				// only from that step): it stays an orphan.
				i++
				continue
			case o.CausationID != "" && ok:
				note = "read before " + cause + ", which caused it; applied after it"
			case o.CausationID == "" && trigger && !o.Time.Before(ev.Time):
				note = "read before the trigger; it names no cause but happened after the trigger: applied after it"
			default:
				i++
				continue
			}
			inst.Orphans = slices.Delete(inst.Orphans, i, i+1)
			oe := Event{Type: m.full(o.Type), Time: o.Time, Now: ev.Now, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset,
				Source: o.Source, ID: o.EventID, CausationID: o.CausationID}
			acts = append(acts, m.apply(inst, oe, note)...)
			if o.EventID != "" {
				causes[o.EventID] = o.Type
			}
			changed = true
		}
	}
	if len(inst.Orphans) == 0 {
		inst.Orphans = nil
	}
	return acts
}

// fromItsStep reports whether an event of type typ with ce_source source
// may have come from the saga's own step: true for types no step emits.
func (m *Machine) fromItsStep(typ, source string) bool {
	ss, ok := m.sources[typ]
	return !ok || slices.Contains(ss, source)
}

// apply applies ev to inst, which is started; note goes first in the
// history entry's note.
func (m *Machine) apply(inst *Instance, ev Event, note0 string) []Action {
	now := ev.Now
	var acts []Action
	inst.UpdatedAt = ev.Time
	step := m.emitter[ev.Type]
	if step == "" {
		step = m.commandOf[ev.Type] // a command: the step it compensates
	}
	var notes []string
	if ev.Timer != "" {
		notes = append(notes, "emitted by timer "+ev.Timer)
	}

	for _, s := range m.implied(ev.Type) {
		if n, done := m.complete(inst, s, &acts); done {
			notes = append(notes, "implies "+s+" completed (its "+m.short(m.completedByOf(s))+" not seen yet)")
			if n != "" {
				notes = append(notes, s+" "+n)
			}
		}
	}
	if s, ok := m.completedBy[ev.Type]; ok {
		if n, _ := m.complete(inst, s, &acts); n != "" {
			notes = append(notes, n)
		}
	}

	note := strings.Join(notes, "; ")
	switch {
	case inst.Status == Running && m.completes[ev.Type]:
		acts = append(acts, m.end(inst, Completed, "", ev.Time)...)
	case inst.Status == Running && m.fails[ev.Type]:
		inst.Reason = m.short(ev.Type)
		acts = append(acts, m.startCompensation(inst, ev.Time, now)...)
	case m.ackOf[ev.Type] != "":
		acts = append(acts, m.onAck(inst, m.ackOf[ev.Type], ev.Time, now, &note)...)
	case inst.Status.Final() && note == "":
		note = "after the saga ended"
	}
	if note0 != "" {
		note = strings.Join(slices.DeleteFunc([]string{note0, note}, func(s string) bool { return s == "" }), "; ")
	}
	m.record(inst, Entry{Type: m.short(ev.Type), Step: step, Time: ev.Time, Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset, Note: note})
	return acts
}

// complete records that step s completed, if it had not, and reports so
// with a note on what follows from it.
func (m *Machine) complete(inst *Instance, s string, acts *[]Action) (note string, done bool) {
	if slices.Contains(inst.Completed, s) {
		return "", false
	}
	inst.Completed = append(inst.Completed, s)
	switch {
	case inst.Status == Compensating:
		// The step finished while the saga was being undone: undo it too,
		// before the steps that completed earlier.
		if _, has := m.command[s]; has {
			inst.Queue = append([]string{s}, inst.Queue...)
			return "completed during compensation; queued for compensation", true
		}
	case inst.Status.Final():
		// A late completion after the end (a race with SagaEnded): the
		// step's effect must still be undone.
		if _, has := m.command[s]; has && inst.Status != Completed {
			*acts = append(*acts, Compensate{Step: s, Command: m.command[s], Attempt: 1})
			return "completed after the saga ended; compensation sent", true
		}
	}
	return "", true
}

func (m *Machine) completedByOf(step string) string {
	for e, s := range m.completedBy {
		if s == step {
			return e
		}
	}
	return ""
}

// dedupe drops repeated timer cancellations, which several transitions of
// one event may each ask for.
func dedupe(acts []Action) []Action {
	out := acts[:0]
	seen := map[Action]bool{}
	for _, a := range acts {
		if c, ok := a.(CancelTimer); ok {
			if seen[c] {
				continue
			}
			seen[c] = true
		}
		out = append(out, a)
	}
	return out
}

// OnTimer applies a fired timer to inst.
func (m *Machine) OnTimer(inst *Instance, name string, now time.Time) []Action {
	if inst == nil {
		return nil
	}
	if !inst.Started() {
		if name == TimerOrphans {
			return []Action{Forget{}} // the trigger did not come in time
		}
		return nil
	}
	inst.UpdatedAt = now
	switch name {
	case TimerDeadline:
		if inst.Status != Running {
			return nil
		}
		inst.Reason = ReasonTimeout
		m.record(inst, Entry{Type: "Deadline", Time: now, Offset: -1, Note: "deadline passed"})
		return dedupe(m.startCompensation(inst, now, now))
	case TimerCompensation:
		p := inst.Pending
		if inst.Status != Compensating || p == nil {
			return nil
		}
		if p.Attempts >= m.compTries {
			inst.Error = fmt.Sprintf("compensation of step %s not acknowledged after %d attempts", p.Step, p.Attempts)
			m.record(inst, Entry{Type: "CompensationTimeout", Step: p.Step, Time: now, Offset: -1, Note: inst.Error})
			inst.Pending = nil
			return dedupe(m.end(inst, Failed, inst.Reason, now))
		}
		p.Attempts++
		p.SentAt = now
		m.record(inst, Entry{Type: "CompensationTimeout", Step: p.Step, Time: now, Offset: -1, Note: fmt.Sprintf("no ack; re-sending (attempt %d)", p.Attempts)})
		return []Action{
			Compensate{Step: p.Step, Command: m.command[p.Step], Attempt: p.Attempts},
			SetTimer{Name: TimerCompensation, At: now.Add(m.compTimeout)},
		}
	}
	return nil
}

// maxNoteError bounds the error quoted in a history note; the whole error
// is in the DeadLetters entry and the DLQ record.
const maxNoteError = 200

// OnRecovery records a dead letter, or its replay or discard, in inst. It
// changes no status: an instance held by a dead letter stays RUNNING until
// the dead letter is replayed and the saga moves on, or its deadline
// passes.
func (m *Machine) OnRecovery(inst *Instance, r Recovery) {
	d := r.DeadLetter
	at := fmt.Sprintf("--step %s --partition %d --offset %d", d.Step, d.Partition, d.Offset)
	var note string
	switch r.Kind {
	case EntryDeadLetter:
		what := d.Event
		if what == "" {
			what = "an undecodable record"
		}
		msg := d.Error
		if len(msg) > maxNoteError {
			n := maxNoteError
			for n > 0 && !utf8.RuneStart(msg[n]) {
				n--
			}
			msg = msg[:n] + "…"
		}
		note = fmt.Sprintf("%s failed after %d attempts: %s; once fixed: troupe dlq replay %s (or discard)", what, d.Attempts, msg, at)
		inst.DeadLetters = append(inst.DeadLetters, d)
	case EntryReplayed, EntryDiscarded:
		note = "dead letter " + at + " replayed"
		if r.Kind == EntryDiscarded {
			note = "dead letter " + at + " discarded; parked events released"
		}
		inst.DeadLetters = slices.DeleteFunc(inst.DeadLetters, func(o DeadLetter) bool {
			return o.Step == d.Step && o.Partition == d.Partition && o.Offset == d.Offset
		})
	default:
		return
	}
	inst.UpdatedAt = r.Time
	m.record(inst, Entry{Type: r.Kind, Step: d.Step, Time: r.Time, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Note: note})
}

// startCompensation, next and onAck take two times: at, when the event
// happened (an instance's end), and now, when the coordinator handles it
// (timers and the sending of a command).
func (m *Machine) startCompensation(inst *Instance, at, now time.Time) []Action {
	inst.Status = Compensating
	acts := []Action{CancelTimer{Name: TimerDeadline}}
	inst.Queue = nil
	for i := len(inst.Completed) - 1; i >= 0; i-- {
		s := inst.Completed[i]
		if _, has := m.command[s]; has && !slices.Contains(inst.Compensated, s) {
			inst.Queue = append(inst.Queue, s)
		}
	}
	return append(acts, m.next(inst, at, now)...)
}

// next sends the next queued compensation, or ends the instance.
func (m *Machine) next(inst *Instance, at, now time.Time) []Action {
	if len(inst.Queue) == 0 {
		inst.Pending = nil
		return m.end(inst, Compensated, inst.Reason, at)
	}
	s := inst.Queue[0]
	inst.Queue = inst.Queue[1:]
	inst.Pending = &Pending{Step: s, Attempts: 1, SentAt: now}
	return []Action{
		Compensate{Step: s, Command: m.command[s], Attempt: 1},
		SetTimer{Name: TimerCompensation, At: now.Add(m.compTimeout)},
	}
}

func (m *Machine) onAck(inst *Instance, step string, at, now time.Time, note *string) []Action {
	if slices.Contains(inst.Compensated, step) {
		*note = "duplicate ack"
		return nil
	}
	if !slices.Contains(inst.Completed, step) {
		// A null compensation: the step never completed; nothing to record.
		*note = "ack of a step that never completed"
		return nil
	}
	inst.Compensated = append(inst.Compensated, step)
	if inst.Status == Compensating && inst.Pending != nil && inst.Pending.Step == step {
		return append([]Action{CancelTimer{Name: TimerCompensation}}, m.next(inst, at, now)...)
	}
	// An ack for a compensation sent after the end (late completion), or
	// one queued behind the pending one: drop it from the queue.
	inst.Queue = slices.DeleteFunc(inst.Queue, func(s string) bool { return s == step })
	return nil
}

func (m *Machine) end(inst *Instance, st Status, reason string, now time.Time) []Action {
	inst.Status = st
	inst.Reason = reason
	inst.EndedAt = now
	inst.Pending, inst.Queue = nil, nil
	return []Action{CancelTimer{Name: TimerDeadline}, CancelTimer{Name: TimerCompensation}, End{Status: st, Reason: reason}}
}

func (m *Machine) record(inst *Instance, e Entry) {
	inst.History = append(inst.History, e)
	if len(inst.History) > HistoryLimit {
		// Keep the first entry (how it started) and the most recent ones.
		inst.History = append(inst.History[:1], inst.History[len(inst.History)-HistoryLimit+1:]...)
	}
}
