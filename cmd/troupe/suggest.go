package main

import (
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// didYouMean returns " (did you mean X?)" naming the candidates closest to
// typed, or "" when none is close: a typo of one or two letters, another
// case, or a prefix. Shown after "unknown ..." messages, which also list
// every candidate.
func didYouMean(typed string, candidates []string) string {
	if s := suggestions(typed, candidates); len(s) > 0 {
		return " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return ""
}

// suggestions are the candidates close to typed, closest first.
func suggestions(typed string, candidates []string) []string {
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

// guardParents makes every command under root that only groups subcommands
// (topics, schemas, dlq, saga, ...) reject an unknown subcommand with exit
// code 2 and "did you mean". Without it cobra prints the group's help and
// exits 0 for 'troupe topics create x', so a script believes it worked.
// The group without arguments still prints its help.
func guardParents(root *cobra.Command) {
	for _, c := range root.Commands() {
		guardParents(c)
		if !c.HasSubCommands() || c.Runnable() {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		// Flags of the mistyped subcommand must not hide the real error.
		c.FParseErrWhitelist.UnknownFlags = true
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			var names []string
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, s.Name())
				}
			}
			return usagef("unknown command %q for %q%s: its commands are %s (see '%s --help')",
				args[0], cmd.CommandPath(), didYouMean(args[0], names), strings.Join(names, ", "), cmd.CommandPath())
		}
	}
}

// unknownName is the error for a name that is not among known: what was
// wrong, the closest names, and all of them after where ("x.yaml has
// steps").
func unknownName(what, name string, known []string, where string) error {
	return usagef("unknown %s %q%s: %s %s", what, name, didYouMean(name, known), where, strings.Join(known, ", "))
}
