// Package suggest finds the names closest to a mistyped one, for the
// "did you mean" of troupe's errors (commands, steps, event types).
package suggest

import (
	"sort"
	"strings"
)

// DidYouMean returns " (did you mean X?)" naming the candidates closest to
// typed, or "" when none is close: a typo of one or two letters, another
// case, or a prefix. Shown after "unknown ..." messages, which also list
// every candidate.
func DidYouMean(typed string, candidates []string) string {
	if s := Suggestions(typed, candidates); len(s) > 0 {
		return " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return ""
}

// Suggestions are the candidates close to typed, closest first.
func Suggestions(typed string, candidates []string) []string {
	low := strings.ToLower(typed)
	limit := max(2, len([]rune(typed))/4)
	type scored struct {
		s string
		d int
	}
	var out []scored
	seen := map[string]bool{}
	for _, c := range candidates {
		if seen[c] || c == typed {
			continue
		}
		seen[c] = true
		lc := strings.ToLower(c)
		d := levenshtein(low, lc)
		if d > limit && !(len(low) >= 3 && strings.HasPrefix(lc, low)) {
			continue
		}
		out = append(out, scored{c, d})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].d < out[j].d })
	names := make([]string, 0, min(len(out), 3))
	for _, s := range out[:min(len(out), 3)] {
		names = append(names, s.s)
	}
	return names
}

// levenshtein is the edit distance between a and b (runes).
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
