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
	rg := &runner.Globals{}
	cmd := runner.RunCommand(exampleApp(), rg)
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		*rg = g.runnerGlobals()
		err := run(c, args)
		if errors.Is(err, runner.ErrUsage) {
			return asUsage(err)
		}
		return err
	}
	return cmd
}

func (g *globals) runnerGlobals() runner.Globals {
	return runner.Globals{
		Brokers: g.brokers, Registry: g.registry, API: g.api, LogLevel: g.logLevel, LogFormat: g.logFormat,
		TLS: g.tls, TLSCA: g.tlsCA, TLSCert: g.tlsCert, TLSKey: g.tlsKey, TLSInsecure: g.tlsInsecure,
		SASLMech: g.saslMech, SASLUser: g.saslUser, SASLPass: g.saslPass, Log: g.log,
	}
}
