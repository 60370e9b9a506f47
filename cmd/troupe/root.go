package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/runner"
)

// globals are the flags every command shares, defined in
// package runner so that a user's step binary has the very same ones.
type globals struct {
	runner.Globals
}

const rootLong = `troupe runs business workflows (sagas) as a choreography of Kafka step
processors: each step consumes events, keeps per-instance state in a local
store rebuilt from a compacted changelog, and emits new events; a saga
coordinator drives compensation in reverse order when a saga fails.

Start here:
  troupe dev                     the whole stack in one process (embedded Kafka,
                                 schema registry, the example order saga, demo load)
  troupe tail --topic orders     in a second terminal: watch the events

Every global flag also reads an environment variable (shown in brackets);
TROUPE_TOPOLOGY and TROUPE_SCHEMAS set the topology file and the schema
directory of every command (the image sets both).
The defaults are where 'troupe dev' listens, so no flags are needed against it.`

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "troupe",
		Short:         "Kafka-native saga choreography: steps, state, compensation, recovery",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			g.API, g.Registry = withScheme(g.API), withScheme(g.Registry)
			return asUsage(g.Setup())
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see '%s --help')", err, cmd.CommandPath())
	})

	g.AddFlags(root.PersistentFlags())

	topics := newTopicsCmd(g)
	topics.AddCommand(newTopicsCreateCmd(g))
	root.AddCommand(
		newVersionCmd(),
		newDevCmd(g),
		newTopologyCmd(),
		topics,
		newSagaCmd(g),
		newRunCmd(g),
		newDLQCmd(g), newReplayCmd(g),
		newSchemasCmd(g), newProduceCmd(g), newTailCmd(g), newRegistryCmd(g),
		newStateCmd(g), newHealthcheckCmd(g),
	)
	guardParents(root)
	return root
}

// cmdContext returns the command's context (cancelled on SIGINT/SIGTERM).
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// withScheme makes "host:port" an http:// URL, as people type --api and
// --registry: url.Parse would take "localhost" for the scheme.
func withScheme(u string) string {
	if u == "" || strings.Contains(u, "://") {
		return u
	}
	return "http://" + u
}
