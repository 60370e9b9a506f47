package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/runner"
)

const devLong = `Runs the whole troupe stack in one process, for development and demos:

  - an embedded Kafka-compatible broker (franz-go's kfake) on --kafka-port,
    persisted under --data-dir so a restart keeps topics, records and offsets;
  - the built-in schema registry on --registry-port;
  - every topic of the topology (troupe topics apply), then the example's
    schemas, each under <topic>-<full name> (SagaEnded under the saga's
    ended topic), before any step runs: troupe produce works at once;
  - every step of the example order saga, each with its state under --data-dir;
  - the HTTP server on --http: the UI at /, /metrics, /healthz, /readyz and
    the saga API;
  - a demo load (--demo-rate orders/s) with orders that complete and orders
    that fail and are compensated, and a summary line every few seconds.

Any Kafka client can connect to the embedded broker (troupe tail, kcat, Java
or Python clients, and Kafka's own kafka-topics, kafka-consumer-groups,
console consumer and GetOffsetShell); it is one broker without replication
(README: Kafka's own tools on the embedded broker). A client that asks for it (Kafka's Java producer does)
creates a topic by producing to it; troupe's own commands never do, so that
a misspelt name is an error: create a topic outside the topology with
'troupe topics create NAME'. On ports other than
the defaults, the banner's commands begin with an export line (TROUPE_BROKERS,
TROUPE_REGISTRY_URL, TROUPE_API_URL) that points the other commands at this
stack. Ctrl-C stops cleanly; started again, it carries on where it stopped.
Delete --data-dir to start from scratch.

With OTEL_EXPORTER_OTLP_ENDPOINT set, every step, the coordinator and the
demo load export OpenTelemetry traces over OTLP/HTTP (README: Traces).

With --auth-token-file (or the token in TROUPE_AUTH_TOKEN) the registry and
the saga API require the token (the UI asks for it); the other commands send
it from the same setting. An --http beyond loopback needs a token, or
--insecure.

The topology is checked against the program first (every event type has a Go
type, every step's handlers match its on:), and --data-dir is locked
(troupe-dev.lock) before anything is opened: a second troupe dev on the same
directory exits 2 with the pid of the first.`

func newDevCmd(g *globals) *cobra.Command {
	var o runner.DevOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the embedded stack: Kafka, registry, the example saga, HTTP, demo load",
		Long:  devLong,
		Example: `  troupe dev                          # everything on the defaults
  troupe dev --data-dir /tmp/t --demo-rate 20
  troupe dev --kafka-port 19092 --registry-port 18081 --http 127.0.0.1:18080 --demo-rate 0`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.ErrOrStderr()
			err := runner.Dev(cmdContext(cmd), exampleApp(), &g.Globals, o)
			if errors.Is(err, runner.ErrUsage) {
				return asUsage(err)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.KafkaPort, "kafka-port", 9092, "port of the embedded Kafka broker (loopback)")
	fl.IntVar(&o.RegistryPort, "registry-port", 8081, "port of the built-in schema registry (loopback)")
	fl.StringVar(&o.DataDir, "data-dir", ".troupe", "directory for the broker's data and the steps' state")
	fl.StringVar(&o.HTTP, "http", "127.0.0.1:8080", "address of the HTTP server (the UI at /, /metrics, /healthz, /readyz, /api)")
	fl.Float64Var(&o.DemoRate, "demo-rate", 5, "demo orders per second (0 = no demo load)")
	runner.PathFlag(fl, &o.Topology, "topology", runner.EnvTopology, "", "topology file (default: the embedded example, topology/orders.yaml)")
	o.Auth.AddFlags(fl, "the registry and the saga API")
	return cmd
}
