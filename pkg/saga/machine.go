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

// The statuses of DESIGN §5. COMPLETED, COMPENSATED and FAILED are final.
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
)

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
	// Pending is the compensation awaiting its ack, if any.
	Pending *Pending `json:"pending,omitempty"`
	// Queue holds the steps still to compensate after Pending, in order.
	Queue []string `json:"queue,omitempty"`
	// DeadLetters are the instance's events in its steps' dead-letter
	// queues that no replay or discard has settled yet: while one is
	// outstanding, the step parks the instance's later events.
	DeadLetters []DeadLetter `json:"deadLetters,omitempty"`
	History     []Entry      `json:"history"`
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
	// Partition and Offset are the record's place in its topic.
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
	Type      string    `json:"type"`
	Step      string    `json:"step,omitempty"`
	Time      time.Time `json:"time"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Note      string    `json:"note,omitempty"`
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

func (Compensate) isAction()  {}
func (SetTimer) isAction()    {}
func (CancelTimer) isAction() {}
func (End) isAction()         {}

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
	Partition int32
	Offset    int64
}

// Relevant reports whether the coordinator tracks events of this type.
func (m *Machine) Relevant(typ string) bool {
	_, emitted := m.emitter[typ]
	return typ == m.trigger || emitted || m.completes[typ] || m.fails[typ]
}

// Starts reports whether an event of this type may be the first the
// coordinator sees of an instance: the trigger, or an event a step's
// forward action emits (events of different topics may be read out of
// order). An ack or a command of an unknown instance starts nothing.
func (m *Machine) Starts(typ string) bool {
	_, fwd := m.forward[typ]
	return typ == m.trigger || fwd
}

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
// updated instance and the actions to carry out.
func (m *Machine) OnEvent(id string, inst *Instance, ev Event) (*Instance, []Action) {
	now := ev.Now
	if now.IsZero() {
		now = ev.Time
	}
	var acts []Action
	if inst == nil {
		inst = &Instance{ID: id, Saga: m.saga, Status: Running, StartedAt: ev.Time, Completed: []string{}, Compensated: []string{}}
		if m.deadline > 0 {
			acts = append(acts, SetTimer{Name: TimerDeadline, At: now.Add(m.deadline)})
		}
	}
	inst.UpdatedAt = ev.Time
	step := m.emitter[ev.Type]
	if step == "" {
		step = m.commandOf[ev.Type] // a command: the step it compensates
	}
	var notes []string
	if ev.Type != m.trigger && len(inst.History) == 0 {
		notes = append(notes, "first event seen is not the trigger")
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
	m.record(inst, Entry{Type: m.short(ev.Type), Step: step, Time: ev.Time, Partition: ev.Partition, Offset: ev.Offset, Note: note})
	return inst, dedupe(acts)
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
	m.record(inst, Entry{Type: r.Kind, Step: d.Step, Time: r.Time, Partition: r.Partition, Offset: r.Offset, Note: note})
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
