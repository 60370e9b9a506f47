package topology

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Guarantee is a step's delivery guarantee.
type Guarantee string

// The delivery guarantees a step can run with.
const (
	ExactlyOnce  Guarantee = "exactly_once"
	AtLeastOnce  Guarantee = "at_least_once"
	defaultParts           = 1
)

// Topology is a parsed, validated topology file.
type Topology struct {
	File        string
	App         string
	Saga        string
	Namespace   string // Avro namespace of short event names
	Key         string // the saga id field of every event (also the Kafka key)
	Guarantee   Guarantee
	Partitions  int32 // of every topic of the saga (co-partitioning)
	Replication int16
	Topics      []Topic
	Trigger     string   // full name of the event that starts an instance
	CompletesOn []string // full names of the events that complete an instance
	FailsOn     []string // full names of the events that fail an instance
	Deadline    time.Duration
	// Retention is how long an ended instance is kept, by every step and
	// the coordinator, before it is deleted; zero keeps it forever.
	Retention  time.Duration
	Steps      []Step
	Retry      Retry
	Compensate CompensationPolicy
	// Warnings are problems that do not stop the topology from running.
	Warnings []Problem
	// eventLines is the line that declares each event type, for problems
	// found after parsing (CheckTypes).
	eventLines map[string]int
}

// Topic is a business topic and the event types it carries.
type Topic struct {
	Name   string
	Events []string // full names
}

// Step is one step processor.
type Step struct {
	Name        string
	On          []string // full names of the input events
	Emits       []string // full names of the events the step may emit
	CompletedBy string   // full name of the event that means the step's forward action is done
	// Compensation is empty when the step has nothing to undo.
	Compensation Compensation
	// Retry is the step's own retry policy (its retry: block, what it leaves
	// out taken from the topology's); nil means the topology's (RetryFor).
	Retry *Retry
	// Concurrency is how many handler calls of different instances the
	// step runs at once (steps[].concurrency); 0 means the runtime's
	// default. One instance's events always run one at a time, in order.
	Concurrency int
	line        int
}

// maxConcurrency matches step.MaxConcurrency (topology does not import
// the runtime).
const maxConcurrency = 10_000

// Compensation is the command that undoes a step and the event that acknowledges it.
type Compensation struct {
	Command string // full name
	Ack     string // full name
}

// Retry is the retry policy of a step's handler errors (README: Writing a step): the
// handler runs at most Attempts times for one record, waiting
// InitialBackoff, doubling up to MaxBackoff, between runs, each wait
// shortened by a random fraction of up to Jitter; then the record is
// dead-lettered.
type Retry struct {
	Attempts       int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Jitter         float64
}

// RetryFor is the retry policy of step name: its own, or the topology's.
func (t *Topology) RetryFor(name string) Retry {
	if s, ok := t.Step(name); ok && s.Retry != nil {
		return *s.Retry
	}
	return t.Retry
}

// CompensationPolicy says how long the coordinator waits for a compensation
// ack before re-emitting the command, and how often it tries.
type CompensationPolicy struct {
	Timeout  time.Duration
	Attempts int
}

// Problem is one finding of validation, with its place in the file.
type Problem struct {
	File string
	Line int
	Msg  string
	Hint string
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	if p.Hint != "" {
		s += " (" + p.Hint + ")"
	}
	return s
}

// Error is every validation error of a topology file.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses the topology file at path.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w (pass the file with --topology, e.g. topology/orders.yaml)", err)
	}
	return Parse(path, b)
}

// Parse parses and validates a topology file's contents. file names it in
// errors. All problems are reported at once, as an *Error.
func Parse(file string, data []byte) (*Topology, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, &Error{[]Problem{{File: file, Line: yamlErrLine(err), Msg: "not valid YAML: " + err.Error()}}}
	}
	p := &parser{file: file}
	t := p.build(p.document(&doc))
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, &Error{p.errs}
	}
	t.Warnings = p.warns
	return t, nil
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
		var n int
		fmt.Sscan(m[1], &n)
		return n
	}
	return 1
}

// Step returns the step named name.
func (t *Topology) Step(name string) (Step, bool) {
	for _, s := range t.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return Step{}, false
}

// StepNames lists the steps in file order.
func (t *Topology) StepNames() []string {
	names := make([]string, len(t.Steps))
	for i, s := range t.Steps {
		names[i] = s.Name
	}
	return names
}

// TopicOf returns the topic that carries the event type (full or short name).
func (t *Topology) TopicOf(eventType string) (string, bool) {
	full := t.FullName(eventType)
	for _, tp := range t.Topics {
		for _, e := range tp.Events {
			if e == full {
				return tp.Name, true
			}
		}
	}
	return "", false
}

// EndedType is the full name of the SagaEnded event the coordinator emits on
// EndedTopic (package saga's Ended).
const EndedType = "troupe.saga.SagaEnded"

// EventTypes lists the full names of every event type the topics declare,
// in file order.
func (t *Topology) EventTypes() []string {
	var out []string
	for _, tp := range t.Topics {
		out = append(out, tp.Events...)
	}
	return out
}

// SubjectTopic is the topic whose schema-registry subject
// <topic>-<full name> holds the schema of an event type: the topic that
// carries it, and EndedTopic for SagaEnded. False for a type the topology
// does not know.
func (t *Topology) SubjectTopic(eventType string) (string, bool) {
	if eventType == EndedType {
		return t.EndedTopic(), true
	}
	return t.TopicOf(eventType)
}

// CheckTypes returns a problem for every event type of the topology that is
// not among known (full names), at the line that declares it: what says
// what is missing ("no schema in schemas/", "no Go type registered"), hint
// how to add one. A known name close to the missing one is suggested.
func (t *Topology) CheckTypes(known []string, what, hint string) []Problem {
	have := make(map[string]bool, len(known))
	for _, k := range known {
		have[k] = true
	}
	var out []Problem
	for _, ev := range t.EventTypes() {
		if have[ev] {
			continue
		}
		h := hint
		if near := closest(ev, known, len(t.ShortName(ev))/3+1); near != "" {
			h = fmt.Sprintf("did you mean %s? %s", t.ShortName(near), hint)
		}
		out = append(out, Problem{File: t.File, Line: t.eventLines[ev], Msg: fmt.Sprintf("event type %s (%s): %s", t.ShortName(ev), ev, what), Hint: h})
	}
	return out
}

// Undeclared returns the names (full event names) that the topology does not
// declare, SagaEnded aside, sorted: the other side of CheckTypes' problems
// (a type renamed in the file but not in the code shows up in both).
func (t *Topology) Undeclared(names []string) []string {
	declared := map[string]bool{EndedType: true}
	for _, ev := range t.EventTypes() {
		declared[ev] = true
	}
	var out []string
	for _, n := range names {
		if !declared[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// closest is the name among names nearest to s by edit distance, if that is
// below limit (a likely misspelling); "" otherwise.
func closest(s string, names []string, limit int) string {
	best, bestD := "", limit
	for _, n := range names {
		if d := editDistance(s, n); d < bestD && d > 0 {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// FullName qualifies a short event name with the topology's namespace.
func (t *Topology) FullName(name string) string { return qualify(t.Namespace, name) }

// ShortName strips the topology's namespace from a full event name.
func (t *Topology) ShortName(full string) string {
	if t.Namespace != "" && strings.HasPrefix(full, t.Namespace+".") {
		return full[len(t.Namespace)+1:]
	}
	return full
}

// InputTopics are the business topics a step consumes, sorted.
func (t *Topology) InputTopics(step string) []string {
	s, ok := t.Step(step)
	if !ok {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(ev string) {
		if tp, ok := t.TopicOf(ev); ok && !seen[tp] {
			seen[tp] = true
			out = append(out, tp)
		}
	}
	for _, ev := range s.On {
		add(ev)
	}
	if s.Compensation.Command != "" {
		add(s.Compensation.Command)
	}
	sort.Strings(out)
	return out
}

// Group is the consumer group of a step.
func (t *Topology) Group(step string) string { return t.App + "." + step }

// CoordinatorGroup is the consumer group of the saga's coordinator.
func (t *Topology) CoordinatorGroup() string { return t.App + ".saga." + t.Saga }

// CoordinatorStep is the name the saga's coordinator runs under as a step,
// saga.<saga>: its retry topic and DLQ are RetryTopic and DLQ of it.
func (t *Topology) CoordinatorStep() string { return "saga." + t.Saga }

// Changelog is the changelog topic of a step.
func (t *Topology) Changelog(step string) string { return t.App + "." + step + ".changelog" }

// RetryTopic is the topic DLQ replays land in, consumed by that step only.
func (t *Topology) RetryTopic(step string) string { return t.App + "." + step + ".retry" }

// DLQ is the dead-letter topic of a step.
func (t *Topology) DLQ(step string) string { return t.App + "." + step + ".dlq" }

// CoordinatorChangelog is the changelog of the saga coordinator's store.
func (t *Topology) CoordinatorChangelog() string { return t.App + ".saga." + t.Saga + ".changelog" }

// EndedTopic carries SagaEnded, consumed by every step of the saga.
func (t *Topology) EndedTopic() string { return t.App + ".saga." + t.Saga + ".ended" }

func qualify(ns, name string) string {
	if ns == "" || strings.Contains(name, ".") {
		return name
	}
	return ns + "." + name
}
