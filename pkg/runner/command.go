package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

const runLong = `Runs one step of a topology as a member of its consumer group (<app>.<step>)
against real Kafka brokers. Start the same command N times — on one machine or
many — and Kafka spreads the partitions over the replicas; when one stops or
dies, its partitions move and the new owner restores their state from the
step's changelog before processing.

It refuses to start (exit 2), naming both sides, a topology with event types
the program has no Go type for, or whose step handlers and on: disagree.
Each process keeps its state in --state-dir (one directory per process and
step; never share one). /metrics, /healthz and /readyz are served on --http;
/readyz answers 503 while the process joins its group or restores state.
At start it waits up to 45 s for its topics to reach every broker and for the
schema registry to answer (a log line every 5 s says what it waits for), so
it may start together with 'troupe topics apply' and the registry.
SIGTERM finishes the current batch, commits it and exits.

Handlers of different instances run concurrently (--concurrency, default the
step's concurrency: in the topology, else 16); one instance's events always
run one at a time, in offset order. Each call has --handler-timeout (default
5s): its context ends then, and the call counts as a failed attempt.

--coordinator SAGA runs the saga's coordinator instead (group
<app>.saga.<saga>): instance status and history, deadlines, compensation in
reverse order, SagaEnded. It serves the saga API on --http (GET /api/sagas,
/api/sagas/{id}, /api/sagas/stats) and the UI at /; run several and each
answers for its partitions, redirecting or asking its peers (at their --advertise-http) for
the rest. With --auth-token-file (or the token in TROUPE_AUTH_TOKEN) the API
requires the token, the coordinator sends it to its peers and to the
registry; an --http beyond loopback needs a token, or --insecure. Every step
sends the token to the registry.

With OTEL_EXPORTER_OTLP_ENDPOINT set (and the other standard OTEL_*
variables), each handler call is an OpenTelemetry span exported over
OTLP/HTTP, one trace per saga; unset, nothing is traced.`

// RunCommand returns the `run` command for app. g holds the global flags,
// registered on the root command by the caller.
func RunCommand(app App, g *Globals) *cobra.Command {
	var o RunOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run one step (or the saga coordinator) as a consumer-group member",
		Long:  runLong,
		Example: `  troupe run --topology topology/orders.yaml --step payment
  troupe run --topology topology/orders.yaml --coordinator order-fulfillment --http 127.0.0.1:8091
  troupe run --topology topology/orders.yaml --step payment --state-dir /var/lib/troupe/payment-1 --http 0.0.0.0:8090
  TROUPE_BROKERS=kafka-1:9092,kafka-2:9092 troupe run --topology topology/orders.yaml --step shipping --guarantee at_least_once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Run(cmd.Context(), app, g, o)
		},
	}
	f := cmd.Flags()
	TopologyFlag(f, &o.Topology, "topology file")
	f.StringVar(&o.Step, "step", "", "the step to run (a step name of the topology)")
	f.StringVar(&o.Coordinator, "coordinator", "", "run the coordinator of this saga instead of a step")
	f.StringVar(&o.StateDir, "state-dir", "", "directory of this process's local state (default .troupe/state/<app>.<step>)")
	f.StringVar(&o.Guarantee, "guarantee", "", "exactly_once or at_least_once (default: the topology's)")
	f.IntVar(&o.Concurrency, "concurrency", 0, "handler calls of different instances at once; one instance's events always run one at a time, in order (default: the step's concurrency: in the topology, else 16)")
	f.DurationVar(&o.HandlerTimeout, "handler-timeout", 0, "deadline of one handler call, after which it counts as a failed attempt (default 5s; with the commit interval, within 80% of the 10s transaction timeout)")
	f.StringVar(&o.HTTP, "http", defaultHTTP, "address of /metrics, /healthz, /readyz (and the saga API and UI with --coordinator)")
	o.Auth.AddFlags(f, "the saga API (with --coordinator)")
	f.StringVar(&o.Advertise, "advertise-http", "", "with --coordinator: the base URL other coordinators reach this one's API at (default http://<--http>, with the host name when --http is 0.0.0.0)")
	return cmd
}

// Main is the whole main function of a user's step binary: the global flags,
// `run` and `version`, signal handling and exit codes (0 ok, 1 failure,
// 2 bad usage). It does not return.
func Main(app App) {
	if app.Version == "" {
		app.Version = "dev"
	}
	g := &Globals{}
	root := &cobra.Command{
		Use:           app.Name,
		Short:         app.Name + " runs troupe steps",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if err := g.Setup(); err != nil {
				return fmt.Errorf("%w: %w", ErrUsage, err)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) })
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(RunCommand(app, g), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), app.Name, app.Version) },
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	if errors.Is(err, ErrUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}
