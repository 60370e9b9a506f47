package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/runner"
)

// exampleApp is the example order saga's steps: what `troupe run` and
// `troupe dev` run. A user's binary passes its own App to runner.Main.
func exampleApp() runner.App {
	return runner.App{Name: "troupe", Version: version, Types: orders.Register, Steps: orders.Steps}
}

func newRunCmd(g *globals) *cobra.Command {
	cmd := runner.RunCommand(exampleApp(), &g.Globals)
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		err := run(c, args)
		if errors.Is(err, runner.ErrUsage) {
			return asUsage(err)
		}
		return err
	}
	return cmd
}
