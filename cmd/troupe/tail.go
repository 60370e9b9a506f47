package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/runner"
)

const tailLong = `Print the events of a topic as JSON lines, decoded from Avro with each
record's writer schema from the registry (no local schema needed):

  {"topic":"orders","partition":3,"offset":17,"timestamp":"...","key":"o-1001",
   "type":"troupe.example.orders.OrderPlaced","schemaId":1,
   "headers":{"ce_id":"...","ce_source":"troupe-cli",...},"value":{...}}

A record that cannot be decoded is printed with "error" and its raw value in
base64 instead of "value", and tail goes on. Only committed records are shown
(read_committed), as the steps see them.

--from chooses where to start in every partition: earliest (default), latest,
an RFC 3339 time, or a duration ago like 10m. Without --follow, tail stops
at the end of the topic as it was when it started; with --follow it waits
for new events until Ctrl-C.`

type tailFlags struct {
	topic, from, typ, topology string
	follow                     bool
	max                        int
}

func newTailCmd(g *globals) *cobra.Command {
	var f tailFlags
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print a topic's events as JSON lines, decoded from Avro",
		Long:  tailLong,
		Example: `  troupe tail --topic orders
  troupe tail --topic payments --from latest --follow
  troupe tail --topic payments --from 10m --type troupe.example.orders.PaymentDeclined
  troupe tail --topic orders --from 2024-05-01T12:00:00Z --max 5 | jq .value`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTail(cmd, g, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.topic, "topic", "", "topic to read (required)")
	fl.StringVar(&f.from, "from", "earliest", "where to start: earliest, latest, an RFC 3339 time, or a duration ago (10m)")
	fl.BoolVar(&f.follow, "follow", false, "keep waiting for new events (until Ctrl-C)")
	fl.StringVarP(&f.typ, "type", "t", "", "print only events of this type (full name, or the name after the last dot); a type neither the topology nor the registry knows is refused")
	runner.TopologyFlag(fl, &f.topology, "topology file whose event types --type may name (ignored if the default is absent; \"\" for none)")
	fl.IntVarP(&f.max, "max", "n", 0, "stop after this many events (0: no limit)")
	return cmd
}

// tailStart says where tail starts: at a time, or the start or end.
type tailStart struct {
	atStart, atEnd bool
	at             time.Time
}

func parseTailFrom(s string, now time.Time) (tailStart, error) {
	switch strings.ToLower(s) {
	case "", "earliest", "beginning", "start":
		return tailStart{atStart: true}, nil
	case "latest", "end", "now":
		return tailStart{atEnd: true}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return tailStart{at: t}, nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil && d > 0 {
		return tailStart{at: now.Add(-d)}, nil
	}
	return tailStart{}, fmt.Errorf("--from %q is not earliest, latest, an RFC 3339 time (2024-05-01T12:00:00Z) or a duration ago (10m, 2h)", s)
}

// tailLine is one printed event.
type tailLine struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp string            `json:"timestamp"`
	Key       *string           `json:"key"`
	Type      string            `json:"type,omitempty"`
	SchemaID  *int              `json:"schemaId,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Value     json.RawMessage   `json:"value,omitempty"`
	Error     string            `json:"error,omitempty"`
	Raw       string            `json:"rawValueBase64,omitempty"`
}

func runTail(cmd *cobra.Command, g *globals, f *tailFlags) error {
	ctx := cmdContext(cmd)
	if f.topic == "" {
		return usagef("--topic is required: the topic to read, e.g. --topic orders")
	}
	if f.max < 0 {
		return usagef("--max %d is negative", f.max)
	}
	start, err := parseTailFrom(f.from, time.Now())
	if err != nil {
		return asUsage(err)
	}
	reg, err := g.RegistryClient()
	if err != nil {
		return asUsage(err)
	}
	serde := avro.NewSerde(reg)
	if f.typ != "" {
		if err := checkTailType(ctx, cmd, f, reg); err != nil {
			return err
		}
	}

	admCl, err := kafka.NewClient(ctx, g.KafkaConfig())
	if err != nil {
		return err
	}
	defer admCl.Close()
	offsets, ends, err := tailOffsets(ctx, kadm.NewClient(admCl), f.topic, start)
	if err != nil {
		return err
	}
	cl, err := kafka.NewClient(ctx, g.KafkaConfig(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{f.topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // so that a partition ending in a transaction marker visibly reaches its end
	)
	if err != nil {
		return err
	}
	defer cl.Close()

	// pending: partitions not yet read to the end they had at start.
	pending := map[int32]int64{}
	if !f.follow {
		for p, end := range ends {
			if off := offsets[p]; off.EpochOffset().Offset < end {
				pending[p] = end
			}
		}
		if len(pending) == 0 {
			return nil
		}
	}
	t := &tailer{f: f, serde: serde, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		var fatal error
		fetches.EachError(func(topic string, p int32, err error) {
			fatal = fmt.Errorf("read %s partition %d: %w", topic, p, err)
		})
		if fatal != nil {
			return fatal
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			end, waiting := pending[r.Partition]
			if !f.follow && (!waiting || r.Offset >= end) {
				continue // past the end it had at start
			}
			if !r.Attrs.IsControl() {
				if err := t.print(ctx, r); err != nil {
					return err
				}
				if f.max > 0 && t.printed >= f.max {
					return nil
				}
			}
			if !f.follow && r.Offset >= end-1 {
				delete(pending, r.Partition)
			}
		}
		if !f.follow && len(pending) == 0 {
			return nil
		}
	}
}

// tailOffsets returns where to start in each partition of topic, and each
// partition's end (last stable offset) now.
func tailOffsets(ctx context.Context, adm *kadm.Client, topic string, start tailStart) (map[int32]kgo.Offset, map[int32]int64, error) {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, nil, fmt.Errorf("topic %s: %w (is the name right? 'troupe topics plan' lists the topology's topics)", topic, err)
	}
	var starts kadm.ListedOffsets
	switch {
	case start.atStart:
		starts, err = adm.ListStartOffsets(ctx, topic)
	case start.atEnd:
		starts = ends
	default:
		starts, err = adm.ListOffsetsAfterMilli(ctx, start.at.UnixMilli(), topic)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	offsets, endOf := map[int32]kgo.Offset{}, map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { endOf[o.Partition] = o.Offset })
	starts.Each(func(o kadm.ListedOffset) {
		off := o.Offset
		if off < 0 || off > endOf[o.Partition] { // no record after the time
			off = endOf[o.Partition]
		}
		offsets[o.Partition] = kgo.NewOffset().At(off)
	})
	if len(offsets) == 0 {
		return nil, nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	return offsets, endOf, nil
}

type tailer struct {
	f       *tailFlags
	serde   *avro.Serde
	out     io.Writer
	errOut  io.Writer
	printed int
}

func (t *tailer) print(ctx context.Context, r *kgo.Record) error {
	line := tailLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC().Format(time.RFC3339Nano)}
	if r.Key != nil {
		k := string(r.Key)
		if !utf8.Valid(r.Key) {
			k = "base64:" + base64.StdEncoding.EncodeToString(r.Key)
		}
		line.Key = &k
	}
	if len(r.Headers) > 0 {
		line.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			line.Headers[h.Key] = string(h.Value)
		}
	}
	ceType, _ := event.Header(r, event.HeaderType)
	if ceType != "" && !t.wanted(ceType) {
		return nil
	}
	if id, _, err := avro.SplitHeader(r.Value); err == nil {
		line.SchemaID = &id
	}
	name, doc, err := t.serde.DecodeJSON(ctx, r.Value)
	switch {
	case errors.Is(err, avro.ErrRegistryUnavailable):
		return err
	case err != nil:
		line.Error = err.Error()
		line.Raw = base64.StdEncoding.EncodeToString(r.Value)
		line.Type = ceType
	default:
		line.Type, line.Value = name, doc
	}
	if ceType == "" && line.Type != "" && !t.wanted(line.Type) {
		return nil
	}
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	t.printed++
	_, err = fmt.Fprintf(t.out, "%s\n", b)
	return err
}

// wanted reports whether an event of the full name typ passes --type.
func (t *tailer) wanted(typ string) bool {
	if t.f.typ == "" || typ == t.f.typ {
		return true
	}
	return !strings.Contains(t.f.typ, ".") && strings.HasSuffix(typ, "."+t.f.typ)
}

// checkTailType refuses a --type that no known type matches, so that a typo
// is not an empty output and exit 0. The known types are the topology's
// (when its file is there) and every record name in the registry's subjects
// (<topic>-<full name>); when neither can be read, any type passes.
func checkTailType(ctx context.Context, cmd *cobra.Command, f *tailFlags, reg *avro.RegistryClient) error {
	var known []string
	ns := ""
	if _, err := os.Stat(f.topology); f.topology != "" && (err == nil || runner.Given(cmd.Flags(), "topology")) {
		t, err := loadTopology(f.topology)
		if err != nil {
			return err
		}
		ns = t.Namespace
		for _, tp := range t.Topics {
			known = append(known, tp.Events...)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	subjects, err := reg.Subjects(sctx)
	cancel()
	if err == nil {
		for _, s := range subjects {
			if i := strings.LastIndexByte(s, '-'); i >= 0 && strings.Contains(s[i+1:], ".") {
				known = append(known, s[i+1:])
			}
		}
	}
	if len(known) == 0 {
		return nil
	}
	t := &tailer{f: f}
	var names []string
	seen := map[string]bool{}
	for _, k := range known {
		if t.wanted(k) {
			return nil
		}
		short := k
		if ns != "" && strings.HasPrefix(k, ns+".") {
			short = k[len(ns)+1:]
		}
		if !seen[short] {
			seen[short] = true
			names = append(names, short)
		}
	}
	typed := f.typ
	if ns != "" && strings.HasPrefix(typed, ns+".") {
		typed = typed[len(ns)+1:]
	}
	return usagef("unknown event type %q%s: the known types are %s", f.typ, didYouMean(typed, names), strings.Join(names, ", "))
}
