package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/replay"
)

func newReplayCmd(g *globals) *cobra.Command {
	var (
		topic, fromTime, toTime, toTopic, group string
		fromOffset                              int64
		dryRun, allowNew, create                bool
	)
	cmd := &cobra.Command{
		Use:   "replay --topic T (--from-offset N | --from-time TIME) (--to-topic T2 | --group G)",
		Short: "Copy a range of a topic into another, or rewind a stopped consumer group",
		Long: `Two ways to process events again after fixing a bug or an outage.

--to-topic T2 copies a range of T into T2: every partition, from
--from-offset N or --from-time TIME, to the end of each partition as it is
when the copy starts, or only records timestamped before --to-time TIME.
Keys, values, headers and timestamps are kept; each record keeps its
partition number when T2 has as many partitions as T, else its key places it
(so an instance's events stay together and in order). Transactions that
were aborted are not copied. Progress goes to stderr every second. T2 must
exist: create it with 'troupe topics create T2 --partitions N' (N as T's,
so records keep their partitions), or add --create to make it so.

--group G rewinds consumer group G on T: its committed offsets are set to
--from-offset N (clamped to what each partition holds) or to the first
record at or after --from-time, so its members reprocess from there when
they start. The group must be stopped (for a step: every replica): the
command refuses while it has live members, and names them. Steps
deduplicate events by ce_id, so reprocessing has no double effects.

TIME is RFC 3339 (2026-05-01T12:00:00Z) or relative to now (-1h, -30m, -2d).`,
		Example: `  # copy yesterday's 10:00-11:00 orders into a scratch topic
  troupe replay --topic orders --from-time 2026-05-01T10:00:00Z --to-time 2026-05-01T11:00:00Z --to-topic orders-replay --create

  # make the payment step reprocess the last hour of orders
  troupe replay --topic orders --group orders.payment --from-time -1h --dry-run
  troupe replay --topic orders --group orders.payment --from-time -1h`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			now := time.Now()
			if topic == "" {
				return usagef("%s needs --topic: the topic to read", cmd.CommandPath())
			}
			if fl.Changed("from-offset") == (fromTime != "") {
				return usagef("%s needs exactly one of --from-offset N and --from-time TIME", cmd.CommandPath())
			}
			if (toTopic == "") == (group == "") {
				return usagef("%s needs exactly one of --to-topic T2 (copy) and --group G (rewind)", cmd.CommandPath())
			}
			if group != "" && toTime != "" {
				return usagef("--to-time goes with --to-topic: a rewound group reprocesses to the end")
			}
			if toTopic != "" && (dryRun || allowNew) {
				return usagef("--dry-run and --allow-new-group go with --group")
			}
			if group != "" && create {
				return usagef("--create goes with --to-topic: a rewind creates nothing")
			}
			from := replay.FromOffset(fromOffset)
			if fromTime != "" {
				t, err := replay.ParseTime(fromTime, now)
				if err != nil {
					return usagef("--from-time: %v", err)
				}
				from = replay.FromTime(t)
			} else if fromOffset < 0 {
				return usagef("--from-offset must be 0 or more, not %d", fromOffset)
			}
			var to time.Time
			if toTime != "" {
				t, err := replay.ParseTime(toTime, now)
				if err != nil {
					return usagef("--to-time: %v", err)
				}
				if ft, ok := from.Time(); ok && !t.After(ft) {
					return usagef("--to-time %s is not after --from-time %s", t.Format(time.RFC3339), ft.Format(time.RFC3339))
				}
				to = t
			}
			if group != "" {
				return rewind(cmd, g, group, topic, from, replay.RewindOptions{DryRun: dryRun, AllowNew: allowNew})
			}
			return copyRange(cmd, g, replay.Range{Topic: topic, From: from, To: to}, toTopic, create)
		},
	}
	f := cmd.Flags()
	f.StringVar(&topic, "topic", "", "topic to read (required)")
	f.Int64Var(&fromOffset, "from-offset", 0, "start at offset N in every partition")
	f.StringVar(&fromTime, "from-time", "", "start at the first record at or after TIME in every partition")
	f.StringVar(&toTime, "to-time", "", "with --to-topic: copy only records timestamped before TIME")
	f.StringVar(&toTopic, "to-topic", "", "copy the range into this topic (it must exist, or add --create)")
	f.BoolVar(&create, "create", false, "with --to-topic: create the target if missing, with the source's partition count")
	f.StringVar(&group, "group", "", "rewind this stopped consumer group instead of copying (a step's group is <app>.<step>)")
	f.BoolVar(&dryRun, "dry-run", false, "with --group: print the new offsets, commit nothing")
	f.BoolVar(&allowNew, "allow-new-group", false, "with --group: set offsets even if the group has none on the topic yet")
	return cmd
}

func copyRange(cmd *cobra.Command, g *globals, r replay.Range, to string, create bool) error {
	errOut := cmd.ErrOrStderr()
	res, err := replay.Copy(cmdContext(cmd), g.KafkaConfig(), r, to, replay.CopyOptions{
		Create: create,
		Progress: func(p replay.Progress) {
			fmt.Fprintf(errOut, "copied %d records (%.0f/s), read %d, %s\n", p.Copied, p.Rate(), p.Read, p.Elapsed.Round(time.Second))
		},
	})
	var mt *replay.MissingTargetError
	if errors.As(err, &mt) {
		return usagef("%v: create it first with 'troupe topics create %s --partitions %d' (as many partitions as %s, so records keep theirs), or add --create",
			err, mt.Topic, mt.SourcePartitions, r.Topic)
	}
	if errors.Is(err, replay.ErrUnknownTopic) {
		return usagef("%v (is the name right? 'troupe topics plan' lists the topology's topics)", err)
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if res.Created {
		fmt.Fprintf(out, "created %s with %d partitions, as %s has\n", to, len(res.Spans), r.Topic)
	}
	fmt.Fprintf(out, "copied %d records from %s to %s in %s (%.0f/s)\n", res.Copied, r, to, res.Elapsed.Round(time.Millisecond), res.Rate())
	fmt.Fprintf(out, "  read %s\n", replay.FormatSpans(res.Spans))
	if res.Skipped > 0 {
		fmt.Fprintf(out, "  %d records read outside the time range were not copied\n", res.Skipped)
	}
	if res.SamePartition {
		fmt.Fprintln(out, "  records kept their partition numbers")
	} else {
		fmt.Fprintf(out, "  %s and %s have different partition counts: records were placed by key\n", r.Topic, to)
	}
	return nil
}

func rewind(cmd *cobra.Command, g *globals, group, topic string, from replay.Start, opts replay.RewindOptions) error {
	rw, err := replay.RewindGroup(cmdContext(cmd), g.KafkaConfig(), group, topic, from, opts)
	switch {
	case errors.Is(err, replay.ErrUnknownTopic):
		return asUsage(err)
	case errors.Is(err, replay.ErrNoCommittedOffsets):
		return usagef("%v; to set offsets for a new group anyway, add --allow-new-group", err)
	case errors.As(err, new(*replay.LiveMembersError)):
		return asUsage(err) // stop the group's members first: bad usage, not a failure
	case err != nil:
		return err
	}
	out := cmd.OutOrStdout()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tCOMMITTED\tNEW")
	for _, p := range rw.Partitions {
		old := fmt.Sprint(p.Committed)
		if p.Committed < 0 {
			old = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\n", p.Partition, old, p.To)
	}
	tw.Flush()
	if rw.DryRun {
		fmt.Fprintf(out, "dry run: would rewind group %s on %s %s (%d partitions); nothing committed\n", group, topic, from, len(rw.Partitions))
		return nil
	}
	fmt.Fprintf(out, "rewound group %s on %s %s (%d partitions): its consumers reprocess from there when they start\n", group, topic, from, len(rw.Partitions))
	return nil
}
