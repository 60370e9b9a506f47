package step

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/troupehq/troupe/pkg/state"
)

// Step is a step's definition: its name, its inputs and a handler per input
// event type. S is the type of the state it keeps per saga instance
// (encoded as JSON in the store and the changelog).
//
// Build it with New and Handle before running it; a Step is not safe to
// change while it runs.
type Step[S any] struct {
	def definition
}

// Definition is a step ready to run: a *Step[S] of any S. Run and NewRuntime
// take one.
type Definition interface {
	// Name is <app>.<step>: the consumer group and the prefix of the
	// step's own topics (.changelog, .retry).
	Name() string
	// Inputs are the topics the step consumes, besides its retry topic.
	Inputs() []string
	definition() *definition
}

type definition struct {
	app, name string
	inputs    []string
	handlers  []*handler
	// raw handles event types without a typed handler (HandleRaw); onTimer
	// runs when a timer set by Context.SetTimer fires (OnTimer).
	raw     *handler
	onTimer func(c *call, name string) error
	// watched maps the topics of Watch to their handler.
	watched map[string]*handler
	errs    []error
	// state checks that a stored state decodes into S (for rebuild tools).
	stateType reflect.Type
	// concurrency is the step's Concurrency option; 0 when not set.
	concurrency int
}

// handler is one registered handler, with its event type erased.
type handler struct {
	typ reflect.Type
	// zero is a zero value of the event type, to ask the codec its name.
	zero any
	call func(c *call, ev any) error
}

// Option configures a Step.
type Option struct{ apply func(*definition) }

// Inputs names the topics the step consumes. Every input (and the step's own
// retry topic, which it always consumes) must have the same number of
// partitions: partition N of each holds the same instances.
func Inputs(topics ...string) Option {
	return Option{func(d *definition) { d.inputs = append(d.inputs, topics...) }}
}

// Concurrency lets up to n handler calls of different instances run at
// once (Config.Concurrency, when set, overrides it). Records of one
// instance still run one at a time, in offset order, each seeing the state
// the previous one left; so a handler needs no locks for its instance's
// state, but anything it shares across instances (a map, a client without
// its own locking) must be safe for concurrent use. 1 runs every record
// one after another.
func Concurrency(n int) Option {
	return Option{func(d *definition) { d.concurrency = n }}
}

// New defines the step name of app. Its consumer group is <app>.<name>, its
// changelog <app>.<name>.changelog and its retry topic <app>.<name>.retry.
func New[S any](app, name string, opts ...Option) *Step[S] {
	s := &Step[S]{def: definition{app: app, name: name, stateType: reflect.TypeFor[S]()}}
	for _, o := range opts {
		o.apply(&s.def)
	}
	return s
}

// Handle registers h for events of type E. When a record of E arrives on an
// input, h runs with the event and a Context for its instance. A second
// handler for the same E is an error that Run reports.
//
// Records of event types without a handler are skipped (counted as
// "ignored"): a topic usually carries more types than one step cares about.
func Handle[S, E any](s *Step[S], h func(c *Context[S], ev E) error) {
	typ := reflect.TypeFor[E]()
	for _, other := range s.def.handlers {
		if other.typ == typ {
			s.def.errs = append(s.def.errs, fmt.Errorf("two handlers for event type %s", typ))
			return
		}
	}
	s.def.handlers = append(s.def.handlers, &handler{
		typ:  typ,
		zero: *new(E),
		call: func(c *call, v any) error {
			ev, ok := v.(E)
			if !ok {
				p, isPtr := v.(*E)
				if !isPtr || p == nil {
					return Permanent(fmt.Errorf("codec decoded a %T, the handler takes %s", v, typ))
				}
				ev = *p
			}
			return h(&Context[S]{c: c}, ev)
		},
	})
}

func (s *Step[S]) definition() *definition { return &s.def }

// Name is <app>.<step>: the step's consumer group and the prefix of its
// topics.
func (s *Step[S]) Name() string { return s.def.group() }

// Inputs are the topics the step consumes, besides its retry topic.
func (s *Step[S]) Inputs() []string { return slices.Clone(s.def.inputs) }

func (d *definition) group() string     { return d.app + "." + d.name }
func (d *definition) changelog() string { return state.ChangelogTopic(d.app, d.name) }
func (d *definition) retry() string     { return d.group() + ".retry" }

// validate reports every problem with the definition at once.
func (d *definition) validate() error {
	errs := append([]error(nil), d.errs...)
	for what, v := range map[string]string{"app": d.app, "step": d.name} {
		if v == "" {
			errs = append(errs, fmt.Errorf("empty %s name", what))
		} else if strings.ContainsAny(v, " /\\:") || v == "." || v == ".." {
			errs = append(errs, fmt.Errorf("%s name %q is not usable in a topic name", what, v))
		}
	}
	if len(d.inputs) == 0 {
		errs = append(errs, errors.New("no inputs (pass step.Inputs(\"topic\", ...) to step.New)"))
	}
	seen := map[string]bool{}
	for _, in := range d.inputs {
		if seen[in] {
			errs = append(errs, fmt.Errorf("input %s named twice", in))
		}
		seen[in] = true
		if in == d.changelog() || in == d.retry() {
			errs = append(errs, fmt.Errorf("input %s is one of the step's own topics", in))
		}
	}
	if d.concurrency < 0 || d.concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("step.Concurrency(%d) is out of range (1 to %d)", d.concurrency, MaxConcurrency))
	}
	if len(d.handlers) == 0 && d.raw == nil && len(d.watched) == 0 {
		errs = append(errs, errors.New("no handlers (register one with step.Handle)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("step %s: %w", d.group(), err)
	}
	return nil
}
