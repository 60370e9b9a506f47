package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/suggest"
)

// didYouMean is suggest.DidYouMean.
func didYouMean(typed string, candidates []string) string {
	return suggest.DidYouMean(typed, candidates)
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
