package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
)

const dlqLong = `When a step's handler keeps failing on an event (past the retry policy's
attempts) or cannot decode it, the step writes the event to its dead-letter
topic <app>.<step>.dlq, with its key, value and headers unchanged plus
troupe_dlq_* headers saying where it came from, why it failed and when. The
partition moves on, but that saga instance's later events are parked, in
order, until you either

  replay   the dead letter (after fixing the cause): the event goes to the
           step's own retry topic <app>.<step>.retry, which only that step
           consumes, and runs again; then the parked events run in order.
           Replaying twice is harmless: steps deduplicate events by ce_id.
  discard  it: the step drops the event and runs the parked ones.

Each dead letter is settled once: --all and --since select the outstanding
ones (neither replayed nor discarded yet) and skip the others, saying so.
Replaying or discarding a settled one by --offset writes nothing: it says
how it was settled and exits 0 when that is what was asked (a second
discard of a discarded letter), 2 otherwise; --force writes anyway (e.g.
replaying a letter whose earlier replay was lost). A replay that fails
again is a new dead letter, at a new offset, outstanding in turn.

An event too big to be a dead letter whole (over 990,000 bytes) has its
value cut, and its oversized headers (troupe_dlq_cut headers name each part
with its size and SHA-256): 'show' says so, and 'replay' reads the cut parts
back from where the event was consumed, while that topic still retains it.

Select dead letters with --offset N (add --partition P when several
partitions hold that offset), --all, or --since TIME (RFC 3339, or relative
like -1h, -2d). 'troupe dlq list' shows the offsets.

The saga's coordinator is a step too: --step saga.<saga> (or --coordinator
SAGA) works on its dead letters, <app>.saga.<saga>.dlq.`

func newDLQCmd(g *globals) *cobra.Command {
	var file, step, coordinator string
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay and discard a step's dead letters",
		Long:  dlqLong,
		Example: `  troupe dlq list --step payment
  troupe dlq show --step payment --offset 3
  troupe dlq replay --step payment --since -1h --dry-run
  troupe dlq replay --step payment --all --rate 50
  troupe dlq discard --step payment --partition 2 --offset 7
  troupe dlq list --coordinator order-fulfillment`,
	}
	pf := cmd.PersistentFlags()
	runner.TopologyFlag(pf, &file, "topology file")
	pf.StringVar(&step, "step", "", "the step whose dead letters to work on (this or --coordinator is required); the coordinator is saga.<saga>")
	pf.StringVar(&coordinator, "coordinator", "", "work on the dead letters of this saga's coordinator (the same as --step saga.SAGA)")

	open := func(cmd *cobra.Command) (*dlq.Queue, *topology.Topology, error) {
		t, err := loadTopology(file)
		if err != nil {
			return nil, nil, err
		}
		step, err := resolveStep(t, step, coordinator, cmd.CommandPath())
		if err != nil {
			return nil, nil, err
		}
		q, err := dlq.Open(cmdContext(cmd), g.KafkaConfig(), step, t.DLQ(step), t.RetryTopic(step))
		if errors.Is(err, replay.ErrUnknownTopic) {
			if step == saga.StepName(t) {
				return nil, nil, fmt.Errorf("%w (the coordinator creates it when it first starts: troupe run --coordinator %s, or troupe dev; is --brokers right?)", err, t.Saga)
			}
			return nil, nil, fmt.Errorf("%w (create the topology's topics: troupe topics apply --topology %s; the step also creates it when it first starts)", err, file)
		}
		return q, t, err
	}
	cmd.AddCommand(
		newDLQListCmd(open),
		newDLQShowCmd(g, open),
		newDLQSendCmd(open, "replay"),
		newDLQSendCmd(open, "discard"),
	)
	return cmd
}

type openQueue func(cmd *cobra.Command) (*dlq.Queue, *topology.Topology, error)

func newDLQListCmd(open openQueue) *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List a step's dead letters: where, when, which instance, why",
		Long: `Prints one line per dead letter in the step's dead-letter topic: its
partition and offset there (what --offset selects), when the step gave up,
the instance (record key), the event type, the handler attempts, what has
been done about it since (replayed, discarded, or - for nothing yet), and
the error.`,
		Example: `  troupe dlq list --step payment
  troupe dlq list --step payment --since -1h`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := parseSince(since)
			if err != nil {
				return err
			}
			q, t, err := open(cmd)
			if err != nil {
				return err
			}
			defer q.Close()
			ctx := cmdContext(cmd)
			var dls []dlq.DeadLetter
			if err := q.Scan(ctx, sel, func(d dlq.DeadLetter) error { dls = append(dls, d); return nil }); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(dls) == 0 {
				fmt.Fprintln(out, nothingIn(q, sel))
				return nil
			}
			outcomes, err := q.Outcomes(ctx)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: cannot read %s to show what was replayed or discarded: %v\n", q.RetryTopic, err)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARTITION\tOFFSET\tFAILED AT\tKEY\tEVENT TYPE\tATTEMPTS\tSTATUS\tERROR")
			var replayed, discarded, outstanding int
			for _, d := range dls {
				status := "?"
				if outcomes != nil {
					o := outcomes[d.At()]
					status = o.String()
					if o.Replays > 0 {
						replayed++
					}
					if o.Discarded {
						discarded++
					}
					if !o.Settled() {
						outstanding++
					}
				}
				typ, errText := t.ShortName(d.Event.Type), d.Error
				if typ == "" {
					typ = "-"
				}
				if d.Malformed != nil {
					errText = d.Malformed.Error()
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Record.Partition, d.Record.Offset, failedAt(d).Format(time.RFC3339),
					printable(d.Record.Key, 40), typ, d.Attempts, status, oneLine(errText, 80))
			}
			tw.Flush()
			fmt.Fprintf(out, "%d dead letter(s) in %s", len(dls), q.Topic)
			if outcomes != nil {
				fmt.Fprintf(out, " (%d outstanding, %d replayed, %d discarded)", outstanding, replayed, discarded)
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only dead letters that failed at or after TIME (RFC 3339, or relative: -1h, -2d)")
	return cmd
}

func newDLQShowCmd(g *globals, open openQueue) *cobra.Command {
	var offset int64
	var partition int32
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show one dead letter: provenance, error, headers and the decoded value",
		Long: `Prints one dead letter in full: where the failed event was consumed, the
step, attempts, time and complete error, every header, and the value decoded
from Avro to JSON with the schema registry (--registry). A value that cannot
be decoded (often the reason it is here) is shown as a hex dump.`,
		Example: `  troupe dlq show --step payment --offset 3
  troupe dlq show --step payment --partition 5 --offset 0`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("offset") {
				return usagef("%s needs --offset N (see the offsets with 'troupe dlq list')", cmd.CommandPath())
			}
			sel, err := offsetSelection(offset, partition)
			if err != nil {
				return err
			}
			q, t, err := open(cmd)
			if err != nil {
				return err
			}
			defer q.Close()
			ctx := cmdContext(cmd)
			var d dlq.DeadLetter
			if err := q.Scan(ctx, sel, func(x dlq.DeadLetter) error { d = x; return nil }); err != nil {
				return offsetUsage(err)
			}
			outcomes, oerr := q.Outcomes(ctx)
			out := cmd.OutOrStdout()
			r := d.Record
			fmt.Fprintf(out, "dead letter %s partition %d offset %d\n", r.Topic, r.Partition, r.Offset)
			tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
			if d.Malformed != nil {
				fmt.Fprintf(tw, "  warning:\t%v\n", d.Malformed)
			}
			fmt.Fprintf(tw, "  step:\t%s\n", d.Step)
			fmt.Fprintf(tw, "  consumed from:\t%s partition %d offset %d\n", d.Source.Topic, d.Source.Partition, d.Source.Offset)
			fmt.Fprintf(tw, "  failed at:\t%s\n", failedAt(d).Format(time.RFC3339Nano))
			fmt.Fprintf(tw, "  attempts:\t%d\n", d.Attempts)
			if d.ReplayCount > 0 {
				fmt.Fprintf(tw, "  replays before:\t%d (it failed again after being replayed)\n", d.ReplayCount)
			}
			switch {
			case oerr != nil:
				fmt.Fprintf(tw, "  status:\tunknown (%v)\n", oerr)
			case outcomes[d.At()] == (dlq.Outcome{}):
				fmt.Fprintf(tw, "  status:\tneither replayed nor discarded yet\n")
			default:
				o := outcomes[d.At()]
				fmt.Fprintf(tw, "  status:\t%s (last at %s)\n", o, o.Last.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(tw, "  key:\t%s\n", printable(r.Key, 0))
			tw.Flush()
			fmt.Fprintf(out, "error:\n  %s\n", strings.ReplaceAll(d.Error, "\n", "\n  "))
			fmt.Fprintln(out, "headers:")
			for _, h := range r.Headers {
				fmt.Fprintf(out, "  %s: %s\n", h.Key, printable(h.Value, 0))
			}
			valueCut := false
			if cuts := d.Cuts(); len(cuts) > 0 {
				fmt.Fprintf(out, "cut to fit the DLQ (replay reads them back from %s partition %d offset %d while that topic retains it):\n", d.Source.Topic, d.Source.Partition, d.Source.Offset)
				for _, c := range cuts {
					fmt.Fprintf(out, "  %s\n", c)
					valueCut = valueCut || c.Part == dlq.CutValue
				}
			}
			if valueCut {
				fmt.Fprintln(out, "value: cut (see above)")
			} else {
				showValue(ctx, out, g, t, r.Value)
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&offset, "offset", -1, "offset of the dead letter in the DLQ (required)")
	cmd.Flags().Int32Var(&partition, "partition", -1, "partition of the DLQ holding --offset (needed when several do)")
	return cmd
}

// showValue prints a dead letter's value as JSON when the registry can
// decode it, else as a hex dump with the reason.
func showValue(ctx context.Context, w io.Writer, g *globals, t *topology.Topology, v []byte) {
	if v == nil {
		fmt.Fprintln(w, "value: none (null)")
		return
	}
	reason := ""
	if reg, err := g.RegistryClient(); err != nil {
		reason = err.Error()
	} else {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		name, doc, err := avro.NewSerde(reg).DecodeJSON(dctx, v)
		cancel()
		if err == nil {
			var pretty bytes.Buffer
			if json.Indent(&pretty, doc, "  ", "  ") == nil {
				doc = pretty.Bytes()
			}
			id, _, _ := avro.SplitHeader(v)
			fmt.Fprintf(w, "value (%s, schema id %d):\n  %s\n", t.ShortName(name), id, doc)
			return
		}
		reason = err.Error()
	}
	fmt.Fprintf(w, "value (%d bytes, not decoded: %s):\n", len(v), reason)
	for _, line := range strings.SplitAfter(strings.TrimRight(hex.Dump(v), "\n"), "\n") {
		fmt.Fprintf(w, "  %s", line)
	}
	fmt.Fprintln(w)
}

// newDLQSendCmd builds 'replay' or 'discard': both select dead letters
// and write one record per dead letter to the step's retry topic.
func newDLQSendCmd(open openQueue, verb string) *cobra.Command {
	var (
		offset    int64
		partition int32
		all       bool
		since     string
		dryRun    bool
		force     bool
		rate      float64
	)
	cmd := &cobra.Command{Args: exactArgs(0, "")}
	switch verb {
	case "replay":
		cmd.Use = "replay (--offset N | --all | --since TIME)"
		cmd.Short = "Send dead letters back to their step, through its retry topic"
		cmd.Long = `Writes each selected dead letter to the step's retry topic <app>.<step>.retry
(only that step consumes it): the original key, value and headers, plus
troupe_replay_count and troupe_replayed_from_* naming the dead letter. The
step runs the event again and then the instance's parked events, in order.
Fix the cause first: an event that fails again goes back to the DLQ.

A dead letter is replayed once: --all and --since skip the settled ones
(replayed or discarded already), and --offset of a settled one writes
nothing (exit 0 if it was replayed, 2 if discarded) unless --force. A
forced replay is safe: the step deduplicates events by ce_id, so a replay
of an event it has already handled changes nothing. Prints each dead
letter as it is written; --dry-run prints what would be written.`
		cmd.Example = `  troupe dlq replay --step payment --offset 3
  troupe dlq replay --step payment --since -1h --dry-run
  troupe dlq replay --step payment --all --rate 100`
	case "discard":
		cmd.Use = "discard (--offset N | --all)"
		cmd.Short = "Give up on dead letters: the step drops them and runs the parked events"
		cmd.Long = `Writes a discard marker for each selected dead letter to the step's retry
topic, keyed by its instance: the step drops that event for good and runs
the instance's parked events, in order. The dead letter stays in the DLQ
(listed as discarded); replaying it later needs --force. A settled dead
letter is not discarded again: --all skips it, and --offset of one writes
nothing (exit 0 if it was discarded, 2 if replayed: then discard the new
dead letter its replay made, if it failed again).`
		cmd.Example = `  troupe dlq discard --step payment --offset 3
  troupe dlq discard --step payment --all --dry-run`
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		sel, err := sendSelection(cmd, verb, offset, partition, all, since)
		if err != nil {
			return err
		}
		if rate < 0 {
			return usagef("--rate must be 0 (no limit) or a positive number of records per second, not %v", rate)
		}
		q, t, err := open(cmd)
		if err != nil {
			return err
		}
		defer q.Close()
		out := cmd.OutOrStdout()
		past, would := map[string]string{"replay": "replayed", "discard": "discarded"}[verb], "would "+verb
		var skipped int
		opts := dlq.SendOptions{DryRun: dryRun, Rate: rate, Force: force, OnSkipped: func(d dlq.DeadLetter, o dlq.Outcome) {
			skipped++
			fmt.Fprintf(out, "skipped %d@%d: key %s, settled already (%s at %s)\n", d.Record.Partition, d.Record.Offset,
				printable(d.Record.Key, 40), o, o.Last.UTC().Format(time.RFC3339))
		}, OnSent: func(d dlq.DeadLetter, r *kgo.Record) {
			to := fmt.Sprintf("%s partition %d offset %d", r.Topic, r.Partition, r.Offset)
			did := past
			if dryRun {
				to, did = fmt.Sprintf("%s partition %d", r.Topic, r.Partition), would
			}
			if r.Partition < 0 {
				to = r.Topic + " (partition by key)"
			}
			line := fmt.Sprintf("%s %d@%d -> %s: key %s", did, d.Record.Partition, d.Record.Offset, to, printable(d.Record.Key, 40))
			if d.Event.Type != "" {
				line += ", " + t.ShortName(d.Event.Type)
			}
			if verb == "replay" {
				line += fmt.Sprintf(", replay #%d", dlq.ReplayCount(r))
			}
			if d.Malformed != nil {
				line += fmt.Sprintf(" (warning: %v)", d.Malformed)
			}
			fmt.Fprintln(out, line)
		}}
		var n int
		if verb == "replay" {
			n, err = q.Replay(cmdContext(cmd), sel, opts)
		} else {
			n, err = q.Discard(cmdContext(cmd), sel, opts)
		}
		var se *dlq.SettledError
		if errors.As(err, &se) {
			if (verb == "discard" && se.Outcome.Discarded) || (verb == "replay" && se.Outcome.Replays > 0) {
				fmt.Fprintf(out, "nothing written: %v (add --force to %s it again)\n", err, verb)
				return nil
			}
			hint := "add --force to replay it anyway (its parked events ran without it)"
			if verb == "discard" {
				hint = "if the replay failed again, discard the new dead letter it made ('troupe dlq list'); --force writes the marker anyway"
			}
			return usagef("nothing written: %v; %s", err, hint)
		}
		if err != nil {
			if errors.Is(err, replay.ErrUnknownTopic) {
				return fmt.Errorf("%w (create the topology's topics: troupe topics apply --topology %s)", err, t.File)
			}
			return offsetUsage(err)
		}
		switch {
		case n == 0 && skipped > 0:
			fmt.Fprintf(out, "nothing to %s: the %d selected dead letter(s) of step %s are settled already (see 'troupe dlq list'; --force to %s them again)\n", verb, skipped, q.Step, verb)
		case n == 0:
			fmt.Fprintf(out, "nothing to %s: %s\n", verb, nothingIn(q, sel))
		case skipped > 0 && dryRun:
			fmt.Fprintf(out, "dry run: %d outstanding dead letter(s) of step %s selected, %d settled already skipped; nothing written to %s\n", n, q.Step, skipped, q.RetryTopic)
		case skipped > 0:
			fmt.Fprintf(out, "%s %d dead letter(s) of step %s into %s; %d settled already skipped\n", past, n, q.Step, q.RetryTopic, skipped)
		case dryRun:
			fmt.Fprintf(out, "dry run: %d dead letter(s) of step %s selected; nothing written to %s\n", n, q.Step, q.RetryTopic)
		default:
			fmt.Fprintf(out, "%s %d dead letter(s) of step %s into %s\n", past, n, q.Step, q.RetryTopic)
		}
		return nil
	}
	f := cmd.Flags()
	f.Int64Var(&offset, "offset", -1, "the dead letter at this offset of the DLQ")
	f.Int32Var(&partition, "partition", -1, "partition of the DLQ holding --offset (needed when several do)")
	f.BoolVar(&all, "all", false, "every outstanding dead letter of the step (not replayed or discarded yet)")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be written, write nothing")
	f.BoolVar(&force, "force", false, "write for dead letters settled already (replayed or discarded) too")
	f.Float64Var(&rate, "rate", 0, "at most N records per second (0: no limit)")
	if verb == "replay" {
		f.StringVar(&since, "since", "", "the dead letters that failed at or after TIME (RFC 3339, or relative: -1h, -2d)")
	}
	return cmd
}

func sendSelection(cmd *cobra.Command, verb string, offset int64, partition int32, all bool, since string) (dlq.Selection, error) {
	byOffset := cmd.Flags().Changed("offset")
	n := 0
	for _, set := range []bool{byOffset, all, since != ""} {
		if set {
			n++
		}
	}
	want := "--offset N, --all or --since TIME"
	if verb == "discard" {
		want = "--offset N or --all"
	}
	if n != 1 {
		return dlq.Selection{}, usagef("%s needs exactly one of %s (see '%s --help')", cmd.CommandPath(), want, cmd.CommandPath())
	}
	switch {
	case byOffset:
		return offsetSelection(offset, partition)
	case cmd.Flags().Changed("partition"):
		return dlq.Selection{}, usagef("--partition goes with --offset")
	case all:
		return dlq.All(), nil
	}
	return parseSince(since)
}

func offsetSelection(offset int64, partition int32) (dlq.Selection, error) {
	if offset < 0 {
		return dlq.Selection{}, usagef("--offset must be 0 or more, not %d (see the offsets with 'troupe dlq list')", offset)
	}
	if partition < -1 {
		return dlq.Selection{}, usagef("--partition must be 0 or more, not %d", partition)
	}
	return dlq.At(partition, offset), nil
}

func parseSince(s string) (dlq.Selection, error) {
	if s == "" {
		return dlq.All(), nil
	}
	t, err := replay.ParseTime(s, time.Now())
	if err != nil {
		return dlq.Selection{}, usagef("--since: %v", err)
	}
	return dlq.Since(t), nil
}

// offsetUsage marks a selected offset that holds no dead letter as bad
// input, with what to do.
func offsetUsage(err error) error {
	var oe *dlq.OffsetError
	if !errors.As(err, &oe) {
		return err
	}
	switch {
	case len(oe.Partitions) > 1:
		return usagef("%v: add --partition (see 'troupe dlq list')", err)
	case errors.Is(err, dlq.ErrEmpty):
		return usagef("%v: the step has no dead letters", err)
	}
	return usagef("%v (see 'troupe dlq list')", err)
}

func nothingIn(q *dlq.Queue, sel dlq.Selection) string {
	if sel.String() == "all" {
		return fmt.Sprintf("%s is empty: step %s has no dead letters", q.Topic, q.Step)
	}
	return fmt.Sprintf("no dead letters in %s %s", q.Topic, sel)
}

func failedAt(d dlq.DeadLetter) time.Time {
	if d.FailedAt.IsZero() {
		return d.Record.Timestamp.UTC()
	}
	return d.FailedAt.UTC()
}

// printable shows b as text when it is printable UTF-8, quoted with
// escapes when it is UTF-8 with control characters, else as hex; limit > 0
// shortens it to that many characters.
func printable(b []byte, limit int) string {
	if b == nil {
		return "(null)"
	}
	s := string(b)
	switch {
	case !utf8.Valid(b):
		s = "0x" + hex.EncodeToString(b)
	case strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		s = strconv.Quote(s)
	}
	return shorten(s, limit)
}

func oneLine(s string, limit int) string {
	return shorten(strings.Join(strings.Fields(s), " "), limit)
}

func shorten(s string, limit int) string {
	if limit <= 0 || utf8.RuneCountInString(s) <= limit {
		return s
	}
	r := []rune(s)
	return string(r[:limit-1]) + "…"
}
