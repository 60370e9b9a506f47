package topology

import (
	"fmt"
	"strings"
)

// Node kinds of a Graph.
const (
	NodeEvent = "event"
	NodeStep  = "step"
)

// Edge kinds of a Graph: an event a step consumes or emits on its forward
// action, a compensation command sent to a step, and the ack the step
// answers it with.
const (
	EdgeForward    = "forward"
	EdgeCompensate = "compensate"
	EdgeAck        = "ack"
)

// Roles of an event node.
const (
	RoleTrigger   = "trigger"
	RoleCompletes = "completes"
	RoleFails     = "fails"
	RoleCommand   = "command"
	RoleAck       = "ack"
)

// Node is a step or an event type of a Graph.
type Node struct {
	// ID is unique in the graph and a valid Mermaid, DOT and HTML id.
	ID   string `json:"id"`
	Kind string `json:"kind"` // NodeEvent or NodeStep
	// Name is the step's name, or the event's full type name.
	Name string `json:"name"`
	// Label is what a drawing shows: the step's name, or the event's
	// short name.
	Label string `json:"label"`
	// Topic carries the event (events only).
	Topic string `json:"topic,omitempty"`
	// Role is the event's part in the saga (RoleTrigger, ...), if any.
	Role string `json:"role,omitempty"`
}

// Edge is an arrow of a Graph.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Kind string `json:"kind"` // EdgeForward, EdgeCompensate or EdgeAck
}

// Graph is the saga's choreography: its event types and steps, and the
// arrows between them. Mermaid, DOT and the UI's diagram draw it.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Graph returns the saga as a graph: every event type (in topic order),
// then every step; the arrows of each step in order: its inputs, its
// forward emits, then its compensation command and ack.
func (t *Topology) Graph() Graph {
	roles := map[string]string{t.Trigger: RoleTrigger}
	for _, ev := range t.CompletesOn {
		roles[ev] = RoleCompletes
	}
	for _, ev := range t.FailsOn {
		roles[ev] = RoleFails
	}
	for _, s := range t.Steps {
		if c := s.Compensation; c.Command != "" {
			roles[c.Command], roles[c.Ack] = RoleCommand, RoleAck
		}
	}
	var g Graph
	for _, tp := range t.Topics {
		for _, ev := range tp.Events {
			g.Nodes = append(g.Nodes, Node{ID: nodeID("e", ev), Kind: NodeEvent, Name: ev, Label: t.ShortName(ev), Topic: tp.Name, Role: roles[ev]})
		}
	}
	for _, s := range t.Steps {
		g.Nodes = append(g.Nodes, Node{ID: nodeID("s", s.Name), Kind: NodeStep, Name: s.Name, Label: s.Name})
	}
	for _, s := range t.Steps {
		for _, ev := range s.On {
			g.Edges = append(g.Edges, Edge{From: nodeID("e", ev), To: nodeID("s", s.Name), Kind: EdgeForward})
		}
		for _, ev := range s.Emits {
			g.Edges = append(g.Edges, Edge{From: nodeID("s", s.Name), To: nodeID("e", ev), Kind: EdgeForward})
		}
		if c := s.Compensation; c.Command != "" {
			g.Edges = append(g.Edges, Edge{From: nodeID("e", c.Command), To: nodeID("s", s.Name), Kind: EdgeCompensate},
				Edge{From: nodeID("s", s.Name), To: nodeID("e", c.Ack), Kind: EdgeAck})
		}
	}
	return g
}

// Mermaid renders the saga as a Mermaid flowchart: events are rounded nodes,
// steps are boxes; the forward (happy) path is drawn with solid arrows, the
// compensation path with dotted ones, and terminal events are styled.
func (t *Topology) Mermaid() string {
	g := t.Graph()
	var b strings.Builder
	fmt.Fprintf(&b, "flowchart LR\n  %%%% saga %s (app %s)\n", t.Saga, t.App)
	for _, n := range g.Nodes {
		if n.Kind == NodeEvent {
			fmt.Fprintf(&b, "  %s([\"%s<br/><small>%s</small>\"])\n", n.ID, n.Label, n.Topic)
		} else {
			fmt.Fprintf(&b, "  %s[\"step: %s\"]\n", n.ID, n.Label)
		}
	}
	for _, e := range g.Edges {
		switch e.Kind {
		case EdgeCompensate:
			fmt.Fprintf(&b, "  %s -. compensate .-> %s\n", e.From, e.To)
		case EdgeAck:
			fmt.Fprintf(&b, "  %s -.-> %s\n", e.From, e.To)
		default:
			fmt.Fprintf(&b, "  %s --> %s\n", e.From, e.To)
		}
	}
	b.WriteString("  classDef done fill:#d4f7d4,stroke:#2a7a2a\n  classDef fail fill:#f7d4d4,stroke:#a02a2a\n  classDef comp fill:#fff3c4,stroke:#a07a00\n")
	for _, ev := range t.CompletesOn {
		fmt.Fprintf(&b, "  class %s done\n", nodeID("e", ev))
	}
	for _, ev := range t.FailsOn {
		fmt.Fprintf(&b, "  class %s fail\n", nodeID("e", ev))
	}
	for _, s := range t.Steps {
		if c := s.Compensation; c.Command != "" {
			fmt.Fprintf(&b, "  class %s,%s comp\n", nodeID("e", c.Command), nodeID("e", c.Ack))
		}
	}
	return b.String()
}

// DOT renders the saga as a Graphviz digraph, with the same conventions as
// Mermaid: solid forward edges, dashed compensation edges.
func (t *Topology) DOT() string {
	g := t.Graph()
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  label=%q;\n  node [fontname=\"Helvetica\"];\n", t.Saga, "saga "+t.Saga+" (app "+t.App+")")
	fill := map[string]string{RoleCompletes: "#d4f7d4", RoleFails: "#f7d4d4"}
	for _, n := range g.Nodes {
		if n.Kind == NodeStep {
			fmt.Fprintf(&b, "  %q [shape=box, style=rounded, label=%q];\n", n.ID, "step: "+n.Label)
			continue
		}
		style := ""
		if c, ok := fill[n.Role]; ok {
			style = fmt.Sprintf(", style=filled, fillcolor=%q", c)
		}
		fmt.Fprintf(&b, "  %q [shape=ellipse, label=%q%s];\n", n.ID, n.Label+"\n("+n.Topic+")", style)
	}
	for _, e := range g.Edges {
		switch e.Kind {
		case EdgeCompensate:
			fmt.Fprintf(&b, "  %q -> %q [style=dashed, color=\"#a07a00\", label=\"compensate\"];\n", e.From, e.To)
		case EdgeAck:
			fmt.Fprintf(&b, "  %q -> %q [style=dashed, color=\"#a07a00\"];\n", e.From, e.To)
		default:
			fmt.Fprintf(&b, "  %q -> %q;\n", e.From, e.To)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func nodeID(prefix, name string) string {
	return prefix + "_" + strings.NewReplacer(".", "_", "-", "_").Replace(name)
}
