package topology

import (
	"fmt"
	"strings"
)

// Mermaid renders the saga as a Mermaid flowchart: events are rounded nodes,
// steps are boxes; the forward (happy) path is drawn with solid arrows, the
// compensation path with dotted ones, and terminal events are styled.
func (t *Topology) Mermaid() string {
	var b strings.Builder
	fmt.Fprintf(&b, "flowchart LR\n  %%%% saga %s (app %s)\n", t.Saga, t.App)
	for _, tp := range t.Topics {
		for _, ev := range tp.Events {
			fmt.Fprintf(&b, "  %s([\"%s<br/><small>%s</small>\"])\n", nodeID("e", ev), t.ShortName(ev), tp.Name)
		}
	}
	for _, s := range t.Steps {
		fmt.Fprintf(&b, "  %s[\"step: %s\"]\n", nodeID("s", s.Name), s.Name)
	}
	for _, s := range t.Steps {
		for _, ev := range s.On {
			fmt.Fprintf(&b, "  %s --> %s\n", nodeID("e", ev), nodeID("s", s.Name))
		}
		for _, ev := range s.Emits {
			fmt.Fprintf(&b, "  %s --> %s\n", nodeID("s", s.Name), nodeID("e", ev))
		}
		if c := s.Compensation; c.Command != "" {
			fmt.Fprintf(&b, "  %s -. compensate .-> %s\n", nodeID("e", c.Command), nodeID("s", s.Name))
			fmt.Fprintf(&b, "  %s -.-> %s\n", nodeID("s", s.Name), nodeID("e", c.Ack))
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
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  label=%q;\n  node [fontname=\"Helvetica\"];\n", t.Saga, "saga "+t.Saga+" (app "+t.App+")")
	terminal := map[string]string{}
	for _, ev := range t.CompletesOn {
		terminal[ev] = "#d4f7d4"
	}
	for _, ev := range t.FailsOn {
		terminal[ev] = "#f7d4d4"
	}
	for _, tp := range t.Topics {
		for _, ev := range tp.Events {
			style := ""
			if c, ok := terminal[ev]; ok {
				style = fmt.Sprintf(", style=filled, fillcolor=%q", c)
			}
			fmt.Fprintf(&b, "  %q [shape=ellipse, label=%q%s];\n", nodeID("e", ev), t.ShortName(ev)+"\n("+tp.Name+")", style)
		}
	}
	for _, s := range t.Steps {
		fmt.Fprintf(&b, "  %q [shape=box, style=rounded, label=%q];\n", nodeID("s", s.Name), "step: "+s.Name)
	}
	for _, s := range t.Steps {
		for _, ev := range s.On {
			fmt.Fprintf(&b, "  %q -> %q;\n", nodeID("e", ev), nodeID("s", s.Name))
		}
		for _, ev := range s.Emits {
			fmt.Fprintf(&b, "  %q -> %q;\n", nodeID("s", s.Name), nodeID("e", ev))
		}
		if c := s.Compensation; c.Command != "" {
			fmt.Fprintf(&b, "  %q -> %q [style=dashed, color=\"#a07a00\", label=\"compensate\"];\n", nodeID("e", c.Command), nodeID("s", s.Name))
			fmt.Fprintf(&b, "  %q -> %q [style=dashed, color=\"#a07a00\"];\n", nodeID("s", s.Name), nodeID("e", c.Ack))
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func nodeID(prefix, name string) string {
	return prefix + "_" + strings.NewReplacer(".", "_", "-", "_").Replace(name)
}
