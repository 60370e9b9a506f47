package topology

import (
	"fmt"
	"slices"
)

// Layout is a Graph placed on a plane, in pixels, for a drawing (the UI's
// SVG diagram): a column per rank of the forward path from the trigger,
// the happy path on the first row, failing events below it, and the
// compensation commands and acks in a band under them, beside the step
// they undo.
type Layout struct {
	Width  int          `json:"width"`
	Height int          `json:"height"`
	Nodes  []PlacedNode `json:"nodes"`
	Edges  []PlacedEdge `json:"edges"`
}

// PlacedNode is a Node with its box.
type PlacedNode struct {
	Node
	X int `json:"x"`
	Y int `json:"y"`
	W int `json:"w"`
	H int `json:"h"`
}

// PlacedEdge is an Edge with its path, an SVG path (a cubic curve from
// the source's border to the target's).
type PlacedEdge struct {
	Edge
	Path string `json:"path"`
}

// Sizes of a Layout's boxes and gaps.
const (
	nodeW, nodeH = 132, 44
)

// Layout places g: left to right, or top to bottom when vertical (for a
// narrow screen).
func (g Graph) Layout(vertical bool) Layout {
	index := map[string]int{}
	for i, n := range g.Nodes {
		index[n.ID] = i
	}
	// rank: the longest forward path from the trigger (bounded: a loop
	// with an exit must not run forever).
	rank := make([]int, len(g.Nodes))
	reached := make([]bool, len(g.Nodes))
	for i, n := range g.Nodes {
		if n.Role == RoleTrigger {
			reached[i] = true
		}
	}
	for range len(g.Nodes) {
		changed := false
		for _, e := range g.Edges {
			f, t := index[e.From], index[e.To]
			if r := rank[f] + 1; e.Kind == EdgeForward && reached[f] && r < len(g.Nodes) && (!reached[t] || rank[t] < r) {
				reached[t], rank[t], changed = true, r, true
			}
		}
		if !changed {
			break
		}
	}
	// Compensation commands sit under the step they undo, acks one rank
	// further; any other event no forward path reaches, at rank 0.
	band := make([]bool, len(g.Nodes))
	for _, e := range g.Edges {
		switch e.Kind {
		case EdgeCompensate:
			if c := index[e.From]; !reached[c] {
				band[c], rank[c] = true, rank[index[e.To]]
			}
		case EdgeAck:
			if a := index[e.To]; !reached[a] {
				band[a], rank[a] = true, rank[index[e.From]]+1
			}
		}
	}
	for i := range g.Nodes {
		if !reached[i] && !band[i] {
			band[i] = true
		}
	}
	// Rows: within a rank, the happy path first, failing events after it,
	// each in graph order; then the band, below every forward row.
	cols := map[int][]int{}
	for i := range g.Nodes {
		if !band[i] {
			cols[rank[i]] = append(cols[rank[i]], i)
		}
	}
	row := make([]int, len(g.Nodes))
	forwardRows := 0
	for _, ns := range cols {
		slices.SortStableFunc(ns, func(a, b int) int {
			fa, fb := g.Nodes[a].Role == RoleFails, g.Nodes[b].Role == RoleFails
			switch {
			case fa == fb:
				return a - b
			case fa:
				return 1
			}
			return -1
		})
		for r, i := range ns {
			row[i] = r
		}
		forwardRows = max(forwardRows, len(ns))
	}
	taken := map[[2]int]bool{}
	rows, ranks := forwardRows, 0
	for i := range g.Nodes {
		if band[i] {
			r := forwardRows
			for taken[[2]int{rank[i], r}] {
				r++
			}
			taken[[2]int{rank[i], r}] = true
			row[i] = r
		}
		rows = max(rows, row[i]+1)
		ranks = max(ranks, rank[i]+1)
	}

	gapRank, gapRow := 28, 26
	if vertical {
		gapRank, gapRow = 24, 12
	}
	var l Layout
	for i, n := range g.Nodes {
		p := PlacedNode{Node: n, W: nodeW, H: nodeH}
		along, across := rank[i]*(nodeW+gapRank), row[i]*(nodeH+gapRow)
		if vertical {
			along, across = rank[i]*(nodeH+gapRank), row[i]*(nodeW+gapRow)
			p.X, p.Y = across, along
		} else {
			p.X, p.Y = along, across
		}
		l.Nodes = append(l.Nodes, p)
	}
	if vertical {
		l.Width, l.Height = rows*(nodeW+gapRow)-gapRow, ranks*(nodeH+gapRank)-gapRank
	} else {
		l.Width, l.Height = ranks*(nodeW+gapRank)-gapRank, rows*(nodeH+gapRow)-gapRow
	}
	for _, e := range g.Edges {
		f, t := index[e.From], index[e.To]
		l.Edges = append(l.Edges, PlacedEdge{Edge: e, Path: curve(l.Nodes[f], l.Nodes[t], rank[f] != rank[t], vertical)})
	}
	return l
}

// curve is the path from a's border to b's: through the sides facing the
// next rank when they are of different ranks, else through the sides
// facing each other across rows.
func curve(a, b PlacedNode, acrossRanks, vertical bool) string {
	horizontal := acrossRanks != vertical // leaves a's left or right side
	var x1, y1, x2, y2 int
	if horizontal {
		x1, y1, x2, y2 = a.X+a.W, a.Y+a.H/2, b.X, b.Y+b.H/2
		if b.X < a.X {
			x1, x2 = a.X, b.X+b.W
		}
		mid := (x2 - x1) / 2
		return fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1+mid, y1, x2-mid, y2, x2, y2)
	}
	x1, y1, x2, y2 = a.X+a.W/2, a.Y+a.H, b.X+b.W/2, b.Y
	if b.Y < a.Y {
		y1, y2 = a.Y, b.Y+b.H
	}
	mid := (y2 - y1) / 2
	return fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1, y1+mid, x2, y2-mid, x2, y2)
}
