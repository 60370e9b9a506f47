package runner

import (
	"fmt"
	"slices"
	"strings"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/topology"
)

// checkTypes refuses (ErrUsage) a topology that declares event types the
// app's serde has no Go type for: every step must be able to decode every
// type of its input topics (a record without ce_type is decoded to learn
// its type), and the coordinator every type of the saga.
func checkTypes(t *topology.Topology, serde *avro.Serde) error {
	problems := t.CheckTypes(serde.Types(), "the app registers no Go type for it",
		"register its Go type and schema in the app's Types (runner.App.Types), or fix the name in the topology")
	if len(problems) == 0 {
		return nil
	}
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = "  " + p.String()
	}
	if extra := t.Undeclared(serde.Types()); len(extra) > 0 {
		lines = append(lines, "  the program registers types the topology does not declare: "+strings.Join(extra, ", "))
	}
	return usage("%s declares %d event type(s) this program cannot decode:\n%s", t.File, len(problems), strings.Join(lines, "\n"))
}

// handlerLister is what a step runtime can tell of its handlers: the full
// names of the event types it has a typed handler for, and whether it has a
// raw handler (which takes every type).
type handlerLister interface {
	Handles() (types []string, raw bool)
}

// checkStepHandlers checks the step runtime's handlers against the
// topology.
func checkStepHandlers(t *topology.Topology, name string, hl handlerLister) error {
	types, raw := hl.Handles()
	return checkHandlers(t, name, types, raw)
}

// checkHandlers refuses (ErrUsage) a step whose handlers and the topology
// disagree, naming both sides: an input type (on:, or the compensation
// command) without a handler would be skipped without a word, and a handler
// for a type the topology does not give the step means the code and the
// file describe different sagas. A raw handler takes every input type.
func checkHandlers(t *topology.Topology, name string, handles []string, raw bool) error {
	s, ok := t.Step(name)
	if !ok {
		return usage("unknown step %q: the topology %s has steps %v", name, t.File, t.StepNames())
	}
	want := slices.Clone(s.On)
	if c := s.Compensation.Command; c != "" {
		want = append(want, c)
	}
	var missing, extra []string
	if !raw {
		for _, ev := range want {
			if !slices.Contains(handles, ev) {
				missing = append(missing, t.ShortName(ev))
			}
		}
	}
	for _, ev := range handles {
		// SagaEnded is the runtime's own input, not the topology's.
		if ev != topology.EndedType && !slices.Contains(want, ev) {
			extra = append(extra, t.ShortName(ev))
		}
	}
	if len(missing)+len(extra) == 0 {
		return nil
	}
	short := func(evs []string) string {
		out := make([]string, len(evs))
		for i, ev := range evs {
			out[i] = t.ShortName(ev)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	topo := fmt.Sprintf("%s gives step %s on: %s", t.File, name, short(s.On))
	if s.Compensation.Command != "" {
		topo += " and compensation " + t.ShortName(s.Compensation.Command)
	}
	var what []string
	if len(missing) > 0 {
		what = append(what, fmt.Sprintf("no handler for %s (register one with step.Handle, or take it out of the topology)", strings.Join(missing, ", ")))
	}
	if len(extra) > 0 {
		what = append(what, fmt.Sprintf("a handler for %s, which the topology does not give the step (add it to the step's on:, or remove the handler)", strings.Join(extra, ", ")))
	}
	sorted := slices.DeleteFunc(slices.Clone(handles), func(ev string) bool { return ev == topology.EndedType })
	slices.Sort(sorted)
	return usage("step %s: the handlers and the topology disagree: %s; the program handles %s: %s",
		name, topo, short(sorted), strings.Join(what, "; "))
}

// appSerde is a serde with the app's types and no registry, for checks
// that must run before anything is started.
func appSerde(app App) (*avro.Serde, error) {
	s := avro.NewSerde(nil, avro.AutoRegister(false))
	if app.Types != nil {
		if err := app.Types(s); err != nil {
			return nil, fmt.Errorf("register event types: %w", err)
		}
	}
	return s, nil
}
