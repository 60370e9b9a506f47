// Package topology reads, validates and explains a saga's topology file: the
// YAML that names its topics, event types, steps, compensations, deadline,
// retry policy and delivery guarantee (README: Concepts).
//
// The topology is the single source of truth: topic provisioning
// (Plan), validation (Parse reports every problem with file:line and a hint),
// the graph picture (Mermaid, DOT) and the coordinator's rules all derive
// from it. What the file alone cannot tell is checked against the world
// with CheckTypes (every event type has a schema, or a Go type) and
// SubjectTopic (the registry subject <topic>-<full name> of each type).
//
//	t, err := topology.Load("topology/orders.yaml")
//	for _, w := range t.Warnings { fmt.Println(w) }
//	fmt.Print(t.Mermaid())
package topology
