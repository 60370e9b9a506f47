package main

import (
	"strings"

	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
)

// stepTargets are the names --step takes: the topology's steps and its
// coordinator, saga.<saga> (a step like the others: group, changelog,
// retry topic and DLQ under <app>.saga.<saga>).
func stepTargets(t *topology.Topology) []string {
	return append(t.StepNames(), saga.StepName(t))
}

// resolveStep returns the step that --step or --coordinator names: one of
// them is needed, a step must be in t (or be its coordinator), and a
// coordinator must be t's saga; else a usage error with "did you mean".
func resolveStep(t *topology.Topology, step, coordinator, cmdPath string) (string, error) {
	names := stepTargets(t)
	switch {
	case step != "" && coordinator != "":
		return "", usagef("%s takes --step or --coordinator, not both", cmdPath)
	case coordinator != "":
		if coordinator != t.Saga {
			return "", unknownName("saga", coordinator, []string{t.Saga}, t.File+" has saga")
		}
		return saga.StepName(t), nil
	case step == "":
		return "", usagef("%s needs --step NAME (%s has %s) or --coordinator %s", cmdPath, t.File, strings.Join(names, ", "), t.Saga)
	}
	for _, n := range names {
		if n == step {
			return step, nil
		}
	}
	if step == t.Saga || step == "saga" || step == "coordinator" {
		return "", usagef("unknown step %q: the coordinator of saga %s is --step %s (or --coordinator %s)", step, t.Saga, saga.StepName(t), t.Saga)
	}
	return "", unknownName("step", step, names, t.File+" has steps")
}
