package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/runner"
)

const topicsCreateLong = `Creates one topic that is not part of the topology: a scratch or audit
topic to copy a range into (troupe replay --to-topic), a topic for another
application. The topology's own topics come from 'troupe topics apply',
with their partition counts and policies; create refuses their names.

--partitions defaults to the topology's partition count (every topic of a
saga has it), so that a copy of a saga topic keeps each record's partition;
without a topology file, to 1. --config sets topic configs (repeatable), as
kafka-topics --config does.`

var topicNameRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func newTopicsCreateCmd(g *globals) *cobra.Command {
	var (
		partitions  int32
		replication int16
		configs     []string
		ifNotExists bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a topic outside the topology (e.g. the target of troupe replay)",
		Long:  topicsCreateLong,
		Example: `  troupe topics create orders-audit
  troupe topics create orders-audit --partitions 8 --config retention.ms=86400000
  troupe topics create scratch --if-not-exists`,
		Args: exactArgs(1, "the topic's NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !topicNameRe.MatchString(name) || name == "." || name == ".." {
				return usagef("%q is not a valid topic name: use 1-249 letters, digits, '.', '_' or '-'", name)
			}
			cfg := map[string]*string{}
			for _, kv := range configs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--config %q is not KEY=VALUE, e.g. --config retention.ms=86400000", kv)
				}
				cfg[k] = kadm.StringPtr(v)
			}
			file, _ := cmd.Flags().GetString("topology")
			fl := cmd.Flags()
			if _, err := os.Stat(file); err == nil || runner.Given(fl, "topology") {
				t, err := loadTopology(file)
				if err != nil {
					return err
				}
				for _, s := range t.TopicSpecs() {
					if s.Name == name {
						return usagef("%s is a topic of %s (%s): create it with 'troupe topics apply --topology %s', which gives it the topology's partitions and configs", name, file, s.Purpose, file)
					}
				}
				if !fl.Changed("partitions") {
					partitions = t.Partitions
				}
			}
			if partitions < 1 {
				return usagef("--partitions must be 1 or more, not %d", partitions)
			}
			if replication == 0 || replication < -1 {
				return usagef("--replication must be -1 (the broker's default) or 1 or more, not %d", replication)
			}
			ctx := cmdContext(cmd)
			cl, err := kafka.NewClient(ctx, g.KafkaConfig())
			if err != nil {
				return err
			}
			defer cl.Close()
			adm := kadm.NewClient(cl)
			out := cmd.OutOrStdout()
			if n, err := replay.Partitions(ctx, adm, name); err == nil {
				if ifNotExists {
					fmt.Fprintf(out, "topic %s exists already (%d partitions); nothing done\n", name, n)
					return nil
				}
				return usagef("topic %s exists already, with %d partitions (add --if-not-exists to accept that)", name, n)
			} else if !errors.Is(err, replay.ErrUnknownTopic) {
				return err
			}
			resp, err := adm.CreateTopic(ctx, partitions, replication, cfg, name)
			if err == nil {
				err = resp.Err
			}
			switch {
			case errors.Is(err, kerr.TopicAlreadyExists) && ifNotExists:
				fmt.Fprintf(out, "topic %s exists already; nothing done\n", name)
				return nil
			case errors.Is(err, kerr.InvalidConfig), errors.Is(err, kerr.InvalidReplicationFactor),
				errors.Is(err, kerr.InvalidPartitions), errors.Is(err, kerr.InvalidTopicException),
				errors.Is(err, kerr.TopicAlreadyExists):
				return usagef("create topic %s: %v", name, err)
			case err != nil:
				return fmt.Errorf("create topic %s: %w", name, err)
			}
			var kvs []string
			for k, v := range cfg {
				kvs = append(kvs, k+"="+*v)
			}
			sort.Strings(kvs)
			line := fmt.Sprintf("created topic %s with %d partitions", name, partitions)
			if len(kvs) > 0 {
				line += " (" + strings.Join(kvs, ", ") + ")"
			}
			fmt.Fprintln(out, line)
			return nil
		},
	}
	f := cmd.Flags()
	f.Int32Var(&partitions, "partitions", 1, "partition count (default: the topology's, else 1)")
	f.Int16Var(&replication, "replication", -1, "replication factor (-1: the broker's default)")
	f.StringArrayVar(&configs, "config", nil, "topic config KEY=VALUE (repeatable), e.g. retention.ms=86400000")
	f.BoolVar(&ifNotExists, "if-not-exists", false, "succeed without change when the topic exists already")
	return cmd
}
