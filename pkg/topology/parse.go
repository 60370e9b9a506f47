package topology

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The parser walks the YAML node tree by hand rather than decoding into
// structs, so that every value keeps its line for error messages and unknown
// keys are reported with the keys that are allowed.

type ref struct {
	name string
	line int
}

type rawTopic struct {
	name       ref
	partitions int
	partLine   int
	events     []ref
}

type rawComp struct {
	command, ack ref
	line         int
}

type rawStep struct {
	name        ref
	on, emits   []ref
	completedBy ref
	comp        *rawComp
	retry       *rawRetry
	concurrency int
	concLine    int
}

// rawRetry is a retry: block; zero fields take the enclosing default.
type rawRetry struct {
	attempts                 int
	initial, maxBack, jitter ref
}

type rawDoc struct {
	app, saga, namespace, key, guarantee, trigger, deadline ref
	retention                                               ref
	partitions, replication                                 int
	topics                                                  []rawTopic
	completesOn, failsOn                                    []ref
	steps                                                   []rawStep
	retry                                                   rawRetry
	compAttempts                                            int
	compTimeout                                             ref
	line                                                    int
}

type parser struct {
	file  string
	errs  []Problem
	warns []Problem
}

func (p *parser) errorf(line int, hint, format string, args ...any) {
	p.errs = append(p.errs, Problem{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

func (p *parser) warnf(line int, hint, format string, args ...any) {
	p.warns = append(p.warns, Problem{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// mapping calls fields[key] for each key of n and reports unknown keys.
func (p *parser) mapping(n *yaml.Node, what string, fields map[string]func(v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "", "%s must be a mapping of keys to values", what)
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		if !ok {
			keys := make([]string, 0, len(fields))
			for key := range fields {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			p.errorf(k.Line, "allowed keys: "+strings.Join(keys, ", "), "unknown key %q in %s", k.Value, what)
			continue
		}
		f(v)
	}
}

func (p *parser) str(n *yaml.Node, dst *ref) {
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "", "expected a single value, got a %s", kindName(n))
		return
	}
	*dst = ref{name: n.Value, line: n.Line}
}

func (p *parser) list(n *yaml.Node, dst *[]ref) {
	if n.Kind == yaml.ScalarNode { // a single name is a list of one
		*dst = append(*dst, ref{name: n.Value, line: n.Line})
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "write [A, B] or one item per line with '- '", "expected a list, got a %s", kindName(n))
		return
	}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			p.errorf(c.Line, "", "expected a name, got a %s", kindName(c))
			continue
		}
		*dst = append(*dst, ref{name: c.Value, line: c.Line})
	}
}

func (p *parser) integer(n *yaml.Node, dst *int) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 1 {
		p.errorf(n.Line, "", "expected a positive whole number, got %q", n.Value)
		return
	}
	*dst = v
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}

func (p *parser) document(doc *yaml.Node) *rawDoc {
	r := &rawDoc{}
	if len(doc.Content) == 0 {
		p.errorf(1, "start from topology/orders.yaml", "the file is empty")
		return r
	}
	root := doc.Content[0]
	r.line = root.Line
	p.mapping(root, "the topology", map[string]func(*yaml.Node){
		"app":          func(v *yaml.Node) { p.str(v, &r.app) },
		"saga":         func(v *yaml.Node) { p.str(v, &r.saga) },
		"namespace":    func(v *yaml.Node) { p.str(v, &r.namespace) },
		"key":          func(v *yaml.Node) { p.str(v, &r.key) },
		"guarantee":    func(v *yaml.Node) { p.str(v, &r.guarantee) },
		"partitions":   func(v *yaml.Node) { p.integer(v, &r.partitions) },
		"replication":  func(v *yaml.Node) { p.integer(v, &r.replication) },
		"trigger":      func(v *yaml.Node) { p.str(v, &r.trigger) },
		"completes_on": func(v *yaml.Node) { p.list(v, &r.completesOn) },
		"fails_on":     func(v *yaml.Node) { p.list(v, &r.failsOn) },
		"deadline":     func(v *yaml.Node) { p.str(v, &r.deadline) },
		"retention":    func(v *yaml.Node) { p.str(v, &r.retention) },
		"topics": func(v *yaml.Node) {
			p.seq(v, "topics", func(n *yaml.Node) {
				var t rawTopic
				t.name.line = n.Line
				p.mapping(n, "a topic", map[string]func(*yaml.Node){
					"name":       func(v *yaml.Node) { p.str(v, &t.name) },
					"events":     func(v *yaml.Node) { p.list(v, &t.events) },
					"partitions": func(v *yaml.Node) { t.partLine = v.Line; p.integer(v, &t.partitions) },
				})
				r.topics = append(r.topics, t)
			})
		},
		"steps": func(v *yaml.Node) {
			p.seq(v, "steps", func(n *yaml.Node) {
				var s rawStep
				s.name.line = n.Line
				p.mapping(n, "a step", map[string]func(*yaml.Node){
					"name":         func(v *yaml.Node) { p.str(v, &s.name) },
					"on":           func(v *yaml.Node) { p.list(v, &s.on) },
					"emits":        func(v *yaml.Node) { p.list(v, &s.emits) },
					"completed_by": func(v *yaml.Node) { p.str(v, &s.completedBy) },
					"compensation": func(v *yaml.Node) {
						c := &rawComp{line: v.Line}
						p.mapping(v, "a compensation", map[string]func(*yaml.Node){
							"command": func(v *yaml.Node) { p.str(v, &c.command) },
							"ack":     func(v *yaml.Node) { p.str(v, &c.ack) },
						})
						s.comp = c
					},
					"retry": func(v *yaml.Node) {
						s.retry = &rawRetry{}
						p.retryBlock(v, "the retry of a step", s.retry)
					},
					"concurrency": func(v *yaml.Node) { s.concLine = v.Line; p.integer(v, &s.concurrency) },
				})
				r.steps = append(r.steps, s)
			})
		},
		"retry": func(v *yaml.Node) { p.retryBlock(v, "retry", &r.retry) },
		"compensation": func(v *yaml.Node) {
			p.mapping(v, "compensation", map[string]func(*yaml.Node){
				"timeout":  func(v *yaml.Node) { p.str(v, &r.compTimeout) },
				"attempts": func(v *yaml.Node) { p.integer(v, &r.compAttempts) },
			})
		},
	})
	return r
}

func (p *parser) retryBlock(n *yaml.Node, what string, r *rawRetry) {
	p.mapping(n, what, map[string]func(*yaml.Node){
		"attempts":        func(v *yaml.Node) { p.integer(v, &r.attempts) },
		"initial_backoff": func(v *yaml.Node) { p.str(v, &r.initial) },
		"max_backoff":     func(v *yaml.Node) { p.str(v, &r.maxBack) },
		"jitter":          func(v *yaml.Node) { p.str(v, &r.jitter) },
	})
}

// retry builds a retry policy from r, what r leaves out taking def's value.
func (p *parser) retryPolicy(r rawRetry, def Retry, what string) Retry {
	out := Retry{
		Attempts:       orDefault(r.attempts, def.Attempts),
		InitialBackoff: p.duration(r.initial, def.InitialBackoff, what+".initial_backoff"),
		MaxBackoff:     p.duration(r.maxBack, def.MaxBackoff, what+".max_backoff"),
		Jitter:         def.Jitter,
	}
	if r.jitter.name != "" {
		j, err := strconv.ParseFloat(r.jitter.name, 64)
		if err != nil || j < 0 || j > 1 {
			p.errorf(r.jitter.line, "a fraction of each backoff drawn at random, from 0 (none) to 1; default 0.2", "%s.jitter %q is not a number between 0 and 1", what, r.jitter.name)
		} else {
			out.Jitter = j
		}
	}
	if out.InitialBackoff > out.MaxBackoff && (r.initial.name != "" || r.maxBack.name != "") {
		line := r.initial.line
		if line == 0 {
			line = r.maxBack.line
		}
		p.errorf(line, "max_backoff caps the doubling backoff, so it must be at least initial_backoff", "%s: initial_backoff %s is longer than max_backoff %s", what, out.InitialBackoff, out.MaxBackoff)
	}
	return out
}

func (p *parser) seq(n *yaml.Node, what string, each func(*yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "one item per line, each starting with '- '", "%s must be a list", what)
		return
	}
	for _, c := range n.Content {
		each(c)
	}
}

var (
	nameRe  = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	topicRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	eventRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

func (p *parser) duration(r ref, def time.Duration, what string) time.Duration {
	if r.name == "" {
		return def
	}
	d, err := time.ParseDuration(r.name)
	if err != nil || d <= 0 {
		p.errorf(r.line, "write a duration such as 500ms, 30s, 5m or 24h", "%s %q is not a positive duration", what, r.name)
		return def
	}
	return d
}

func (p *parser) build(r *rawDoc) *Topology {
	t := &Topology{
		File:        p.file,
		App:         r.app.name,
		Saga:        r.saga.name,
		Namespace:   r.namespace.name,
		Key:         r.key.name,
		Guarantee:   Guarantee(r.guarantee.name),
		Partitions:  int32(max(r.partitions, defaultParts)),
		Replication: int16(max(r.replication, 1)),
	}
	for _, req := range []struct {
		v    ref
		key  string
		hint string
	}{
		{r.app, "app", "the application name prefixes every group and internal topic, e.g. app: orders"},
		{r.saga, "saga", "the saga's name, e.g. saga: order-fulfillment"},
		{r.key, "key", "the event field that holds the saga id, e.g. key: orderId"},
		{r.trigger, "trigger", "the event type that starts a saga, e.g. trigger: OrderPlaced"},
	} {
		if req.v.name == "" {
			p.errorf(r.line, req.hint, "missing %q", req.key)
		}
	}
	for _, n := range []ref{r.app, r.saga} {
		if n.name != "" && !nameRe.MatchString(n.name) {
			p.errorf(n.line, "use lower case letters, digits, '-' and '_'", "name %q is not allowed", n.name)
		}
	}
	switch t.Guarantee {
	case "":
		t.Guarantee = ExactlyOnce
	case ExactlyOnce, AtLeastOnce:
	default:
		p.errorf(r.guarantee.line, "use exactly_once (default) or at_least_once", "unknown guarantee %q", r.guarantee.name)
	}
	t.Deadline = p.duration(r.deadline, 0, "deadline")
	t.Retention = p.duration(r.retention, 0, "retention")
	t.Retry = p.retryPolicy(r.retry, Retry{Attempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Jitter: 0.2}, "retry")
	t.Compensate = CompensationPolicy{
		Timeout:  p.duration(r.compTimeout, 10*time.Second, "compensation.timeout"),
		Attempts: orDefault(r.compAttempts, 5),
	}

	// Topics and the events they carry.
	if len(r.topics) == 0 {
		p.errorf(r.line, "list the business topics and their event types under topics:", "no topics")
	}
	eventTopic := map[string]string{}
	eventLine := map[string]int{}
	var firstPart *rawTopic
	for i := range r.topics {
		rt := &r.topics[i]
		if !topicRe.MatchString(rt.name.name) {
			p.errorf(rt.name.line, "letters, digits, '.', '_' and '-', at most 249", "topic name %q is not a legal Kafka topic name", rt.name.name)
		}
		if strings.HasPrefix(rt.name.name, t.App+".") {
			p.errorf(rt.name.line, "business topic names must not start with the app name and a dot: those names are troupe's internal topics", "topic %q clashes with internal topic names", rt.name.name)
		}
		if rt.partitions == 0 {
			rt.partitions = int(t.Partitions)
			rt.partLine = rt.name.line
		}
		if firstPart == nil {
			firstPart = rt
		} else if rt.partitions != firstPart.partitions {
			p.errorf(rt.partLine, fmt.Sprintf("every topic of a saga needs the same partition count so that one instance's events meet on one partition number (co-partitioning); %s has %d", firstPart.name.name, firstPart.partitions),
				"topic %q has %d partitions", rt.name.name, rt.partitions)
		}
		tp := Topic{Name: rt.name.name}
		for _, ev := range rt.events {
			full := qualify(t.Namespace, ev.name)
			if !eventRe.MatchString(full) {
				p.errorf(ev.line, "an Avro record name such as OrderPlaced or com.acme.OrderPlaced", "event type %q is not a valid Avro name", ev.name)
				continue
			}
			if other, dup := eventTopic[full]; dup {
				p.errorf(ev.line, fmt.Sprintf("already declared on topic %q at line %d; an event type lives on one topic", other, eventLine[full]), "event %s declared twice", ev.name)
				continue
			}
			eventTopic[full] = tp.Name
			eventLine[full] = ev.line
			tp.Events = append(tp.Events, full)
		}
		t.Topics = append(t.Topics, tp)
	}
	if firstPart != nil {
		t.Partitions = int32(firstPart.partitions)
	}
	t.eventLines = eventLine
	known := func(ev ref, role string) (string, bool) {
		full := qualify(t.Namespace, ev.name)
		if _, ok := eventTopic[full]; !ok {
			p.errorf(ev.line, "declare it under a topic's events:, or fix the spelling", "unknown event type %s in %s", ev.name, role)
			return full, false
		}
		return full, true
	}
	if r.trigger.name != "" {
		t.Trigger, _ = known(r.trigger, "trigger")
	}
	terminal := map[string]bool{}
	for _, ev := range r.completesOn {
		if full, ok := known(ev, "completes_on"); ok {
			t.CompletesOn = append(t.CompletesOn, full)
			terminal[full] = true
		}
	}
	for _, ev := range r.failsOn {
		if full, ok := known(ev, "fails_on"); ok {
			t.FailsOn = append(t.FailsOn, full)
			terminal[full] = true
		}
	}
	if len(r.completesOn) == 0 {
		p.errorf(r.line, "name the event(s) that complete the saga, e.g. completes_on: [ShipmentScheduled]", "missing \"completes_on\"")
	}

	// Steps.
	if len(r.steps) == 0 {
		p.errorf(r.line, "a saga needs at least one step under steps:", "no steps")
	}
	seen := map[string]int{}
	consumed := map[string]bool{}
	acks := map[string]bool{}
	for _, rs := range r.steps {
		s := Step{Name: rs.name.name, line: rs.name.line}
		if !nameRe.MatchString(s.Name) {
			p.errorf(rs.name.line, "use lower case letters, digits, '-' and '_'", "step name %q is not allowed", s.Name)
		}
		if l, dup := seen[s.Name]; dup {
			p.errorf(rs.name.line, fmt.Sprintf("already used at line %d; a step name is its consumer group", l), "step %q declared twice", s.Name)
		}
		seen[s.Name] = rs.name.line
		if len(rs.on) == 0 {
			p.errorf(rs.name.line, "list its input event types, e.g. on: [OrderPlaced]", "step %q has no inputs", s.Name)
		}
		for _, ev := range rs.on {
			if full, ok := known(ev, "step "+s.Name+" on"); ok {
				s.On = append(s.On, full)
				consumed[full] = true
			}
		}
		for _, ev := range rs.emits {
			if full, ok := known(ev, "step "+s.Name+" emits"); ok {
				s.Emits = append(s.Emits, full)
			}
		}
		if rs.completedBy.name != "" {
			if full, ok := known(rs.completedBy, "step "+s.Name+" completed_by"); ok {
				s.CompletedBy = full
				if !contains(s.Emits, full) {
					p.errorf(rs.completedBy.line, "add it to the step's emits", "step %q is completed_by %s, which it does not emit", s.Name, rs.completedBy.name)
				}
			}
		}
		if c := rs.comp; c != nil {
			if c.command.name == "" {
				p.errorf(c.line, "name the command that undoes the step, e.g. command: RefundPayment", "compensation of step %q has no command", s.Name)
			} else if full, ok := known(c.command, "step "+s.Name+" compensation"); ok {
				s.Compensation.Command = full
			}
			if c.ack.name == "" {
				p.errorf(c.line, "name the event the step emits when the compensation is done, e.g. ack: PaymentRefunded; the coordinator waits for it", "compensation of step %q has no ack event", s.Name)
			} else if full, ok := known(c.ack, "step "+s.Name+" compensation ack"); ok {
				s.Compensation.Ack = full
				acks[full] = true
			}
			if s.CompletedBy == "" {
				p.errorf(c.line, "add completed_by: the event after which the step has something to undo", "step %q has a compensation but no completed_by", s.Name)
			}
		}
		if rs.retry != nil {
			rp := p.retryPolicy(*rs.retry, t.Retry, "steps."+s.Name+".retry")
			s.Retry = &rp
		}
		if rs.concurrency < 0 || rs.concurrency > maxConcurrency {
			p.errorf(rs.concLine, fmt.Sprintf("use 1 to %d (0 or no concurrency: for the runtime's default)", maxConcurrency), "steps.%s.concurrency %d is out of range", s.Name, rs.concurrency)
		}
		s.Concurrency = rs.concurrency
		t.Steps = append(t.Steps, s)
	}
	if t.Trigger != "" && !consumed[t.Trigger] {
		p.errorf(r.trigger.line, "add it to some step's on:", "no step consumes the trigger %s", r.trigger.name)
	}
	for i, s := range t.Steps {
		for j, ev := range s.Emits {
			if !consumed[ev] && !terminal[ev] && !acks[ev] {
				p.errorf(r.steps[i].emits[j].line, "add a step that consumes it, or list it in completes_on or fails_on",
					"event %s emitted by step %q is consumed by nobody and ends nothing", t.ShortName(ev), s.Name)
			}
		}
		if s.Compensation.Command == "" && s.CompletedBy != "" && !terminal[s.CompletedBy] {
			p.warnf(s.line, "add compensation: {command: ..., ack: ...} if its effect must be undone when a later step fails",
				"step %q has an effect (%s) but no compensation", s.Name, t.ShortName(s.CompletedBy))
		}
	}
	p.checkCycles(t, terminal)
	return t
}

// checkCycles reports groups of steps that feed each other events in a loop
// with no way out: no step of the loop emits an event that ends the saga or
// reaches a step outside the loop.
func (p *parser) checkCycles(t *Topology, terminal map[string]bool) {
	n := len(t.Steps)
	consumers := map[string][]int{}
	for i, s := range t.Steps {
		for _, ev := range s.On {
			consumers[ev] = append(consumers[ev], i)
		}
	}
	succ := make([][]int, n)
	for i, s := range t.Steps {
		for _, ev := range s.Emits {
			succ[i] = append(succ[i], consumers[ev]...)
		}
	}
	// Tarjan's strongly connected components.
	index, low := make([]int, n), make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int
	next := 0
	var comps [][]int
	var strong func(v int)
	strong = func(v int) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range succ[v] {
			if index[w] < 0 {
				strong(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var c []int
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				c = append(c, w)
				if w == v {
					break
				}
			}
			comps = append(comps, c)
		}
	}
	for v := range n {
		if index[v] < 0 {
			strong(v)
		}
	}
	for _, c := range comps {
		in := map[int]bool{}
		for _, v := range c {
			in[v] = true
		}
		loop := len(c) > 1
		if !loop {
			for _, w := range succ[c[0]] {
				loop = loop || w == c[0]
			}
		}
		if !loop {
			continue
		}
		exit := false
		for _, v := range c {
			for _, ev := range t.Steps[v].Emits {
				if terminal[ev] {
					exit = true
				}
				for _, w := range consumers[ev] {
					exit = exit || !in[w]
				}
			}
		}
		if !exit {
			names := make([]string, len(c))
			line := t.Steps[c[0]].line
			for i, v := range c {
				names[len(c)-1-i] = t.Steps[v].Name
				line = min(line, t.Steps[v].line)
			}
			p.errorf(line, "let one of them emit an event in completes_on or fails_on, or one consumed outside the loop",
				"steps %s form a loop with no exit", strings.Join(names, " → "))
		}
	}
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
