package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/topology"
)

const schemasLong = `Avro schemas live in schemas/*.avsc, one record per file. Each is registered
in the schema registry under the subject <topic>-<record full name> (the
TopicRecordNameStrategy: one topic carries several event types), once per
topic that carries the event.

Which topic carries which event comes from the topology file (--topology,
default topology/orders.yaml when it exists); troupe.saga.SagaEnded goes to
the saga's <app>.saga.<saga>.ended topic. --topic T puts every schema on T
instead. 'check' and 'list' also look at the subjects already in the
registry for each record.

Evolve a schema safely: add fields with a default, never remove a field
that has no default or change a field's type, and run 'troupe schemas check'
(in CI) before 'register'. The registry's compatibility level (BACKWARD by
default: new schemas must read old data) decides; check names every field
that breaks it.`

// schemaFlags are the flags every schemas subcommand shares.
type schemaFlags struct {
	dir      string
	topic    string
	topology string
}

func newSchemasCmd(g *globals) *cobra.Command {
	var f schemaFlags
	cmd := &cobra.Command{
		Use:   "schemas",
		Short: "Register, check and list the Avro schemas of schemas/*.avsc",
		Long:  schemasLong,
		Example: `  troupe schemas check                      # dry run: exit 1 if a change is incompatible
  troupe schemas register                   # register every changed schema
  troupe schemas list
  troupe schemas register --dir schemas/ --topic orders --registry http://registry:8081`,
	}
	pf := cmd.PersistentFlags()
	runner.PathFlag(pf, &f.dir, "dir", runner.EnvSchemas, "schemas", "directory of .avsc files")
	pf.StringVar(&f.topic, "topic", "", "register every schema on this topic (default: the topology's topic of each event)")
	runner.TopologyFlag(pf, &f.topology, "topology file that maps event types to topics (ignored if the default is absent)")
	cmd.AddCommand(
		newSchemasCheckCmd(g, &f),
		newSchemasRegisterCmd(g, &f),
		newSchemasListCmd(g, &f),
	)
	return cmd
}

// schemaSet is the local schemas and the subjects each goes to.
type schemaSet struct {
	files    []avro.SchemaFile
	subjects map[string][]string // full name -> subjects
	reg      *avro.RegistryClient
}

// loadSchemaSet reads the .avsc files and works out each one's subjects:
// from --topic, else the topology, plus (withExisting) the subjects the
// registry already has for the record.
func loadSchemaSet(cmd *cobra.Command, g *globals, f *schemaFlags, withExisting bool) (*schemaSet, error) {
	if st, err := os.Stat(f.dir); err != nil || !st.IsDir() {
		return nil, usagef("--dir %s is not a directory of .avsc files", f.dir)
	}
	files, err := avro.ReadSchemas(os.DirFS(f.dir), ".")
	if err != nil {
		return nil, asUsage(fmt.Errorf("%s: %w", f.dir, err))
	}
	for i := range files {
		files[i].Path = strings.TrimSuffix(f.dir, "/") + "/" + files[i].Path
	}
	topo, err := schemaTopology(cmd, f)
	if err != nil {
		return nil, err
	}
	reg, err := g.RegistryClient()
	if err != nil {
		return nil, asUsage(err)
	}
	set := &schemaSet{files: files, subjects: map[string][]string{}, reg: reg}

	var existing []string
	if withExisting && f.topic == "" {
		if existing, err = reg.Subjects(cmdContext(cmd)); err != nil {
			return nil, err
		}
	}
	var unmapped []string
	for _, file := range files {
		seen := map[string]bool{}
		add := func(s string) {
			if !seen[s] {
				seen[s] = true
				set.subjects[file.FullName] = append(set.subjects[file.FullName], s)
			}
		}
		for _, topic := range topicsOf(file.FullName, f.topic, topo) {
			add(avro.Subject(topic, file.FullName))
		}
		for _, s := range existing {
			if strings.HasSuffix(s, "-"+file.FullName) {
				add(s)
			}
		}
		if len(set.subjects[file.FullName]) == 0 {
			unmapped = append(unmapped, file.FullName)
		}
	}
	if len(unmapped) > 0 && !withExisting {
		where := "there is no topology file"
		if topo != nil {
			where = topo.File + " has no topic for them"
		}
		return nil, usagef("no topic for %s: %s (add the events to a topic in the topology, or pass --topic)", strings.Join(unmapped, ", "), where)
	}
	return set, nil
}

// schemaTopology loads --topology; the default file may be absent.
func schemaTopology(cmd *cobra.Command, f *schemaFlags) (*topology.Topology, error) {
	if f.topic != "" || f.topology == "" {
		return nil, nil
	}
	if _, err := os.Stat(f.topology); errors.Is(err, os.ErrNotExist) && !runner.Given(cmd.Flags(), "topology") {
		return nil, nil
	}
	return loadTopology(f.topology)
}

// topicsOf is the topic a record is registered on: --topic, else the
// topology's topic for it (SagaEnded: the saga's ended topic).
func topicsOf(fullName, topic string, t *topology.Topology) []string {
	if topic != "" {
		return []string{topic}
	}
	if t == nil {
		return nil
	}
	if tp, ok := t.SubjectTopic(fullName); ok {
		return []string{tp}
	}
	return nil
}

func newSchemasCheckCmd(g *globals, f *schemaFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Dry run: would each schema be accepted? Exit 1 on an incompatible change",
		Long: `For every .avsc file and subject, asks the registry whether the schema is
already there (unchanged), would be a new subject or a compatible new
version, or would be refused. Changes nothing. An incompatible schema prints
the registry's reasons, naming each field, and makes the command exit 1.`,
		Example: `  troupe schemas check
  troupe schemas check --dir schemas/ --registry http://registry:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := loadSchemaSet(cmd, g, f, true)
			if err != nil {
				return err
			}
			return set.walk(cmd, false)
		},
	}
}

func newSchemasRegisterCmd(g *globals, f *schemaFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "register",
		Short: "Register every new or changed schema under its subjects",
		Long: `Registers each .avsc file under the subject <topic>-<full name> of every topic
that carries it (see 'troupe schemas --help'). A schema the subject already
has is left alone. An incompatible one is refused by the registry, with
its reasons; the others are still registered, and the command exits 1.`,
		Example: `  troupe schemas register --dir schemas/ --topology topology/orders.yaml   # each under its topic's subject
  troupe schemas register --topic audit       # every schema on one topic (SagaEnded too)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := loadSchemaSet(cmd, g, f, false)
			if err != nil {
				return err
			}
			return set.walk(cmd, true)
		},
	}
}

// walk checks (and with register, registers) every schema under its
// subjects, printing one line each.
func (set *schemaSet) walk(cmd *cobra.Command, register bool) error {
	ctx := cmdContext(cmd)
	out := cmd.OutOrStdout()
	var bad, unmapped []string
	for _, file := range set.files {
		subjects := set.subjects[file.FullName]
		if len(subjects) == 0 {
			fmt.Fprintf(out, "%s  %s: no topic carries it (not in the topology, not in the registry): skipped\n", file.Path, file.FullName)
			unmapped = append(unmapped, file.FullName)
			continue
		}
		for _, subject := range subjects {
			st, err := set.reg.Status(ctx, subject, file.Text)
			if err != nil {
				return err
			}
			switch {
			case st.State == avro.StateIncompatible:
				fmt.Fprintf(out, "%s  %s: INCOMPATIBLE with version %d:\n", file.Path, subject, st.Version)
				for _, m := range st.Messages {
					fmt.Fprintf(out, "    %s\n", m)
				}
				if len(st.Messages) == 0 {
					fmt.Fprintln(out, "    (the registry gave no reason)")
				}
				bad = append(bad, subject)
			case st.State == avro.StateUnchanged:
				fmt.Fprintf(out, "%s  %s: unchanged (version %d, id %d)\n", file.Path, subject, st.Version, st.ID)
			case !register:
				fmt.Fprintf(out, "%s  %s: %s, would be version %d\n", file.Path, subject, st.State, st.Version+1)
			default:
				id, err := set.reg.Register(ctx, subject, file.Text)
				if err != nil {
					fmt.Fprintf(out, "%s  %s: REFUSED: %v\n", file.Path, subject, err)
					bad = append(bad, subject)
					continue
				}
				fmt.Fprintf(out, "%s  %s: registered version %d, id %d\n", file.Path, subject, st.Version+1, id)
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d incompatible schema(s): %s (make the change compatible: add fields with a default; keep fields without one; keep types)", len(bad), strings.Join(bad, ", "))
	}
	if len(unmapped) > 0 {
		return usagef("no topic for %s (add them to a topic in the topology, or pass --topic)", strings.Join(unmapped, ", "))
	}
	return nil
}

func newSchemasListCmd(g *globals, f *schemaFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the local schemas and where each stands in the registry",
		Long: `Prints every .avsc file with its record, each subject it belongs to, and its
state there: unchanged (registered: version and id), new, compatible (a
change not registered yet) or incompatible.`,
		Example: `  troupe schemas list
  troupe schemas list --registry http://registry:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := loadSchemaSet(cmd, g, f, true)
			if err != nil {
				return err
			}
			return set.list(cmd)
		},
	}
}

func (set *schemaSet) list(cmd *cobra.Command) error {
	ctx := cmdContext(cmd)
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tRECORD\tSUBJECT\tSTATE\tVERSION\tID")
	for _, file := range set.files {
		subjects := append([]string(nil), set.subjects[file.FullName]...)
		sort.Strings(subjects)
		if len(subjects) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\tno topic\t-\t-\n", file.Path, file.FullName)
		}
		for _, subject := range subjects {
			st, err := set.reg.Status(ctx, subject, file.Text)
			if err != nil {
				return err
			}
			version, id := "-", "-"
			if st.State == avro.StateUnchanged {
				version, id = fmt.Sprint(st.Version), fmt.Sprint(st.ID)
			} else if st.Version > 0 {
				version = fmt.Sprintf("(latest %d)", st.Version)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", file.Path, file.FullName, subject, st.State, version, id)
		}
	}
	return flushTable(tw)
}

func flushTable(tw *tabwriter.Writer) error {
	if err := tw.Flush(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	return nil
}
