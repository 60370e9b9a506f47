package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/topology"
)

// loadTopology reads a topology file; a missing or invalid file is bad input.
func loadTopology(path string) (*topology.Topology, error) {
	if path == "" {
		return nil, usagef("no topology file given (pass --topology, e.g. --topology topology/orders.yaml)")
	}
	t, err := topology.Load(path)
	if err != nil {
		var te *topology.Error
		if errors.As(err, &te) {
			return nil, usagef("%s has %d problem(s):\n%v", path, len(te.Problems), err)
		}
		return nil, asUsage(err)
	}
	return t, nil
}

// checkSchemas reports every event type of t that has no .avsc in dir.
func checkSchemas(t *topology.Topology, dir string) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usagef("--schemas %s is not a directory of .avsc files (pass the directory the event schemas are in, or --schemas '' to skip the check)", dir)
	}
	files, err := avro.ReadSchemas(os.DirFS(dir), ".")
	if err != nil {
		return asUsage(fmt.Errorf("%s: %w", dir, err))
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.FullName
	}
	d := strings.TrimSuffix(dir, "/") + "/"
	problems := t.CheckTypes(names, "no schema in "+d,
		fmt.Sprintf("write %s<Name>.avsc with a record of that full name, or fix the spelling", d))
	if len(problems) == 0 {
		return nil
	}
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = p.String()
	}
	for _, name := range t.Undeclared(names) {
		for _, f := range files {
			if f.FullName == name {
				lines = append(lines, fmt.Sprintf("%s%s defines %s, which the topology does not declare", d, f.Path, name))
			}
		}
	}
	return usagef("%s has %d problem(s):\n%s", t.File, len(problems), strings.Join(lines, "\n"))
}

func newTopologyCmd() *cobra.Command {
	var schemaDir string
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Check a topology file and draw its saga",
		Long: `A topology file (topology/<saga>.yaml) declares a saga: its topics and event
types, steps, compensations, deadline, retry policy and delivery guarantee.
Everything else — topics, consumer groups, the coordinator's rules — is
derived from it. See topology/orders.yaml for a commented example and
topology/topology.schema.json for editor completion.`,
	}
	validate := &cobra.Command{
		Use:   "validate [FILE]",
		Short: "Validate a topology file; print every problem with file:line and a hint",
		Long: `Checks a topology file and prints every problem at once, each with its
file:line and what to do: unknown event types, topics of one saga with
different partition counts, events that nobody consumes and that end nothing,
steps in a loop with no exit, compensations without an ack event, event
types without a schema in --schemas (each declared type needs a record of
that full name there). A step with an effect and no compensation is a
warning. Exit code 2 when invalid. FILE defaults to $TROUPE_TOPOLOGY, else
topology/orders.yaml.`,
		Example: `  troupe topology validate topology/orders.yaml
  troupe topology validate my-saga.yaml --schemas my-schemas/`,
		Args: topologyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := loadTopology(topologyPath(args))
			if err != nil {
				return err
			}
			if schemaDir != "" {
				if err := checkSchemas(t, schemaDir); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			for _, w := range t.Warnings {
				fmt.Fprintf(out, "warning: %s\n", w)
			}
			checked := ""
			if schemaDir != "" {
				checked = fmt.Sprintf("; every event type has a schema in %s", schemaDir)
			}
			fmt.Fprintf(out, "%s: saga %q (app %q) is valid: %d topics, %d steps, trigger %s%s\n",
				topologyPath(args), t.Saga, t.App, len(t.Topics), len(t.Steps), t.ShortName(t.Trigger), checked)
			return nil
		},
	}
	cmd.AddCommand(validate)
	runner.PathFlag(validate.Flags(), &schemaDir, "schemas", runner.EnvSchemas, "schemas", "directory of the .avsc files every event type must have ('' skips the check)")
	var format string
	graph := &cobra.Command{
		Use:   "graph [FILE]",
		Short: "Draw the saga as Mermaid or Graphviz DOT",
		Long: `Prints the saga's choreography: events (rounded) and steps (boxes), the
forward path with solid arrows and the compensation path with dotted ones.
Completing events are green, failing ones red, compensation events yellow.
FILE defaults to $TROUPE_TOPOLOGY, else topology/orders.yaml.`,
		Example: `  troupe topology graph topology/orders.yaml > saga.mmd
  troupe topology graph topology/orders.yaml --format dot | dot -Tsvg > saga.svg`,
		Args: topologyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := loadTopology(topologyPath(args))
			if err != nil {
				return err
			}
			switch format {
			case "mermaid":
				_, err = io.WriteString(cmd.OutOrStdout(), t.Mermaid())
			case "dot":
				_, err = io.WriteString(cmd.OutOrStdout(), t.DOT())
			default:
				return usagef("unknown --format %q (use mermaid or dot)", format)
			}
			return err
		},
	}
	graph.Flags().StringVar(&format, "format", "mermaid", "output format: mermaid or dot")
	cmd.AddCommand(graph)
	return cmd
}

func newTopicsCmd(g *globals) *cobra.Command {
	var file, schemaDir string
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "Plan and create every topic a topology needs",
		Long: `Derives every topic of a topology (README: Concepts): the business topics, and per
step its changelog (compacted), retry and dead-letter topics, the
coordinator's changelog, the saga-ended topic and _schemas. 'plan' shows the
difference with the cluster; 'apply' creates what is missing.

A topic that exists with another partition count or cleanup policy is a
mismatch: troupe never changes it for you (it would break co-partitioning
or delete data), it tells you how to migrate.`,
	}
	runner.TopologyFlag(cmd.PersistentFlags(), &file, "topology file")
	var format, strimziCluster, strimziNS, strimziAPI string
	run := func(apply bool) func(cmd *cobra.Command, _ []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if !apply && format != "table" && format != "strimzi" {
				return usagef("unknown --format %q (use table or strimzi)", format)
			}
			t, err := loadTopology(file)
			if err != nil {
				return err
			}
			if !apply && format == "strimzi" {
				out, err := topology.StrimziTopics(t.TopicSpecs(), strimziCluster, strimziNS, strimziAPI)
				if err != nil {
					return asUsage(err)
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			ctx := cmdContext(cmd)
			cl, err := kafka.NewClient(ctx, g.KafkaConfig())
			if err != nil {
				return err
			}
			defer cl.Close()
			plan, err := topology.MakePlan(ctx, cl, t.TopicSpecs())
			if err != nil {
				return err
			}
			printPlan(cmd.OutOrStdout(), plan)
			if !apply {
				return plan.Err()
			}
			created, err := plan.Apply(ctx, cl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %d topic(s)\n", len(created))
			if schemaDir == "" {
				return nil
			}
			set, err := loadSchemaSet(cmd, g, &schemaFlags{dir: schemaDir, topology: file}, false)
			if err != nil {
				return err
			}
			return set.walk(cmd, true)
		}
	}
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create the missing topics (refuses when an existing one does not match)",
		Long: `Creates the topology's missing topics; one that exists with another
partition count or cleanup policy stops it (see 'troupe topics --help').
With --register-schemas DIR it then registers DIR's schemas, each under its
topic's subject, as 'troupe schemas register --dir DIR' does: the one set-up
step a deployment runs before its steps (the compose file's setup service,
the Kubernetes Job). It needs the schema registry (--registry) for that.`,
		Example: `  troupe topics apply --topology topology/orders.yaml
  troupe topics apply --register-schemas schemas --registry http://registry:8081`,
		Args: exactArgs(0, ""),
		RunE: run(true),
	}
	apply.Flags().StringVar(&schemaDir, "register-schemas", "", "after the topics, register the .avsc files of this directory in the registry ('' for none)")
	plan := &cobra.Command{
		Use:   "plan",
		Short: "Show which topics would be created and which do not match",
		Long: `Compares the topology's topics with the cluster: each is to create, ok, or
a mismatch (another partition count or cleanup policy), with its partitions,
replication, purpose and configs.

--format strimzi prints them instead as Strimzi KafkaTopic resources (one
YAML document each; the topic's name in spec.topicName, the resource's
name made a valid Kubernetes name), for a cluster whose topics the Strimzi
Topic Operator manages; it needs no broker. Regenerate them when the
topology changes (deploy/k8s/strimzi/kafkatopics.yaml is the example's).`,
		Example: `  troupe topics plan --topology topology/orders.yaml --brokers kafka:9092
  troupe topics plan --format strimzi --strimzi-cluster my-cluster > kafkatopics.yaml`,
		Args: exactArgs(0, ""),
		RunE: run(false),
	}
	pf := plan.Flags()
	pf.StringVar(&format, "format", "table", "output: table (against the cluster) or strimzi (KafkaTopic resources, no broker needed)")
	pf.StringVar(&strimziCluster, "strimzi-cluster", "my-cluster", "with --format strimzi: the Strimzi Kafka cluster's name (the strimzi.io/cluster label)")
	pf.StringVar(&strimziNS, "namespace", "", "with --format strimzi: metadata.namespace of the resources (default: none, as kubectl or kustomize sets it)")
	pf.StringVar(&strimziAPI, "strimzi-api-version", topology.StrimziAPIVersion, "with --format strimzi: the KafkaTopic apiVersion (kafka.strimzi.io/v1 for Strimzi's v1 API)")
	cmd.AddCommand(plan, apply)
	return cmd
}

func printPlan(w io.Writer, p *topology.Plan) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tTOPIC\tPARTITIONS\tREPLICATION\tPURPOSE\tCONFIG")
	for _, it := range p.Items {
		var cfg []string
		for k, v := range it.Spec.Configs {
			cfg = append(cfg, k+"="+v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", it.Action, it.Spec.Name, it.Spec.Partitions, it.Spec.Replication, it.Spec.Purpose, strings.Join(cfg, ","))
	}
	tw.Flush()
	c := p.Counts()
	fmt.Fprintf(w, "%d to create, %d ok, %d mismatched\n", c[topology.ActionCreate], c[topology.ActionOK], c[topology.ActionMismatch])
}

// topologyArg accepts the optional FILE of 'troupe topology validate|graph'.
func topologyArg(cmd *cobra.Command, args []string) error {
	if len(args) <= 1 {
		return nil
	}
	return usagef("%s takes one topology file, got %q (see '%s --help')", cmd.CommandPath(), args, cmd.CommandPath())
}

// topologyPath is the FILE argument, else the default topology
// ($TROUPE_TOPOLOGY, else topology/orders.yaml).
func topologyPath(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return runner.DefaultTopology()
}

// exactArgs is cobra.ExactArgs with an error that says what is expected and
// counts as bad usage (exit code 2).
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usagef("%s takes no arguments, got %q (see '%s --help')", cmd.CommandPath(), args, cmd.CommandPath())
		}
		return usagef("%s needs %s (see '%s --help')", cmd.CommandPath(), what, cmd.CommandPath())
	}
}
