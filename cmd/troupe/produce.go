package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/runner"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/pkg/tracing"
)

const produceLong = `Produce events from JSON: each document is encoded as Avro with the
registry's schema for --type (the latest version under the subject
<topic>-<type>, or --schema FILE, registered first), framed in the Confluent
wire format, and sent with CloudEvents headers (ce_id, ce_type, ce_source
troupe-cli, ce_time, ...). Any Avro consumer can read it.

The JSON is plain: unions take the bare value, timestamps RFC 3339 or epoch
milliseconds, bytes base64; a missing field takes its default. A document
that does not fit the schema is refused, naming the field and the type it
needs (exit 2).

The record key is the saga instance id: --key, or else each document's
--key-field (default: the topology's key field, orderId). A --key that
contradicts the document's key field is refused (the saga would be split
under two ids) unless --force. --type and --topic default from the
topology: a short type name takes its namespace, and the topic is the one
that carries the type. A type the topology does not know is refused with
the closest known ones, unless --topic names a topic outside the topology;
so is a topology topic that does not carry the type (--force sends anyway,
e.g. to see what the steps make of it).

--data sends one document and prints its partition and offset; --file sends
a file of JSON lines (- for stdin) and prints progress.`

type produceFlags struct {
	topic, typ, key, keyField, data, file, schema, source, topology string
	force                                                           bool
}

func newProduceCmd(g *globals) *cobra.Command {
	var f produceFlags
	cmd := &cobra.Command{
		Use:   "produce",
		Short: "Produce JSON as Avro events, with CloudEvents headers",
		Long:  produceLong,
		Example: `  troupe produce --topic orders --type troupe.example.orders.OrderPlaced --key o-1001 --data '{
    "orderId": "o-1001", "customerId": "c-42", "amountCents": 12999, "currency": "EUR",
    "items": [{"sku": "BOOK-1", "quantity": 2}],
    "shipTo": {"name": "Ada", "line1": "12 Main St", "city": "London", "country": "GB"},
    "placedAt": "2024-05-01T12:00:00Z"}'
  troupe produce --type OrderPlaced --file orders.jsonl        # topic and key from the topology
  generate-orders | troupe produce --type OrderPlaced --file -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runProduce(cmd, g, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.topic, "topic", "", "topic to produce to (default: the topology's topic for --type)")
	fl.StringVar(&f.typ, "type", "", "Avro record full name, e.g. troupe.example.orders.OrderPlaced (required)")
	fl.StringVar(&f.key, "key", "", "record key for every record (default: each document's --key-field)")
	fl.StringVar(&f.keyField, "key-field", "", "top-level field that holds the key (default: the topology's key, else orderId)")
	fl.StringVar(&f.data, "data", "", "one JSON document")
	fl.StringVar(&f.file, "file", "", "file of JSON documents, one per line (- for stdin)")
	fl.StringVar(&f.schema, "schema", "", ".avsc file to encode with (registered under the subject if needed); default: the registry's latest")
	fl.StringVar(&f.source, "source", "troupe-cli", "ce_source header")
	runner.TopologyFlag(fl, &f.topology, "topology file for default topic, namespace and key field (ignored if the default is absent)")
	fl.BoolVar(&f.force, "force", false, "send even when --key contradicts the document's key field, or the type is not one the topology puts on --topic")
	return cmd
}

func runProduce(cmd *cobra.Command, g *globals, f *produceFlags) error {
	ctx := cmdContext(cmd)
	if (f.data == "") == (f.file == "") {
		return usagef("give exactly one of --data JSON or --file FILE.jsonl")
	}
	var topo *topology.Topology
	if _, err := os.Stat(f.topology); err == nil || runner.Given(cmd.Flags(), "topology") {
		t, err := loadTopology(f.topology)
		if err != nil {
			return err
		}
		topo = t
	}
	if f.typ == "" {
		return usagef("--type is required: the Avro record full name, e.g. troupe.example.orders.OrderPlaced")
	}
	if topo != nil {
		f.typ = topo.FullName(f.typ)
		if f.keyField == "" {
			f.keyField = topo.Key
		}
		if err := checkTopologyType(topo, f); err != nil {
			return err
		}
		if f.topic == "" {
			f.topic, _ = topo.TopicOf(f.typ)
		}
	}
	if f.keyField == "" {
		f.keyField = "orderId"
	}
	if f.topic == "" {
		return usagef("--topic is required (no topology maps %s to a topic)", f.typ)
	}

	reg, err := g.RegistryClient()
	if err != nil {
		return asUsage(err)
	}
	serde := avro.NewSerde(reg)
	if f.schema != "" {
		raw, err := os.ReadFile(f.schema)
		if err != nil {
			return asUsage(fmt.Errorf("--schema: %w", err))
		}
		if err := serde.Register(nil, string(raw)); err != nil {
			return asUsage(fmt.Errorf("--schema %s: %w", f.schema, err))
		}
		if names := serde.Types(); len(names) != 1 || names[0] != f.typ {
			return usagef("--schema %s defines %s, not --type %s", f.schema, strings.Join(names, ""), f.typ)
		}
	}
	// Traced (OTEL_EXPORTER_OTLP_ENDPOINT set), each event starts its
	// saga's trace.
	tp, err := tracing.FromEnv(ctx, tracing.Options{Service: "troupe-produce", Logger: g.Log})
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	}()
	cl, err := kafka.NewClient(ctx, g.KafkaConfig(), append(tp.ProducerOpts(), kgo.UnknownTopicRetries(2))...)
	if err != nil {
		return err
	}
	defer cl.Close()

	p := &producer{cmd: cmd, f: f, serde: serde, cl: cl, topo: topo}
	if f.data != "" {
		return p.one(ctx, []byte(f.data))
	}
	return p.file(ctx)
}

type producer struct {
	cmd   *cobra.Command
	f     *produceFlags
	serde *avro.Serde
	cl    *kgo.Client
	topo  *topology.Topology // nil without a topology file
}

// record builds the Kafka record for one JSON document.
func (p *producer) record(ctx context.Context, doc []byte) (*kgo.Record, error) {
	key := p.f.key
	if key == "" {
		var err error
		if key, err = keyOf(doc, p.f.keyField); err != nil {
			return nil, asUsage(err)
		}
	} else if inDoc, err := keyOf(doc, p.f.keyField); err == nil && inDoc != key && !p.f.force {
		return nil, usagef("--key %s contradicts the document's %s %s: the saga instance id is the key, so its events would be split between two instances (drop --key, or fix the document; --force sends it anyway)",
			key, p.f.keyField, inDoc)
	}
	value, err := p.serde.EncodeJSON(ctx, p.f.topic, p.f.typ, doc)
	if err != nil {
		var fe *avro.FieldError
		if errors.As(err, &fe) {
			return nil, asUsage(fmt.Errorf("%s: %w", p.f.typ, err))
		}
		if errors.Is(err, avro.ErrUnknownSchema) && !errors.Is(err, avro.ErrRegistryUnavailable) {
			return nil, asUsage(err)
		}
		return nil, err
	}
	meta := event.New(p.f.typ, p.f.source, key)
	return &kgo.Record{Topic: p.f.topic, Key: []byte(key), Value: value, Headers: meta.Headers()}, nil
}

// keyOf reads the top-level field of a JSON document as the record key.
func keyOf(doc []byte, field string) (string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		return "", fmt.Errorf("not a JSON object: %w", err)
	}
	raw, ok := m[field]
	if !ok {
		return "", fmt.Errorf("the document has no %q field to use as the key (pass --key, or --key-field NAME)", field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil && s != "" {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	return "", fmt.Errorf("key field %q is %s, not a non-empty string or a number (pass --key)", field, raw)
}

func (p *producer) one(ctx context.Context, doc []byte) error {
	rec, err := p.record(ctx, doc)
	if err != nil {
		return err
	}
	if err := p.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return p.produceErr(err)
	}
	fmt.Fprintf(p.cmd.OutOrStdout(), "produced %s key %s to %s partition %d offset %d\n", p.f.typ, rec.Key, rec.Topic, rec.Partition, rec.Offset)
	return nil
}

func (p *producer) produceErr(err error) error {
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		if p.topo != nil {
			for _, s := range p.topo.TopicSpecs() {
				if s.Name == p.f.topic {
					return fmt.Errorf("topic %s does not exist (create the topology's topics: troupe topics apply --topology %s): %w", p.f.topic, p.f.topology, err)
				}
			}
		}
		return fmt.Errorf("topic %s does not exist (troupe produce never creates one: troupe topics create %s, or troupe topics apply --topology %s for the topology's): %w", p.f.topic, p.f.topic, p.f.topology, err)
	}
	return fmt.Errorf("produce to %s: %w", p.f.topic, err)
}

// file produces every line of --file, asynchronously, reporting progress
// on stderr once a second and stopping at the first bad line or failure.
func (p *producer) file(ctx context.Context) error {
	var in io.Reader
	name := p.f.file
	if name == "-" {
		in, name = p.cmd.InOrStdin(), "stdin"
	} else {
		fh, err := os.Open(p.f.file)
		if err != nil {
			return asUsage(fmt.Errorf("--file: %w", err))
		}
		defer fh.Close()
		in = fh
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu       sync.Mutex
		done     int
		firstErr error
		parts    = map[int32]int{}
	)
	var wg sync.WaitGroup
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	report := func() {
		mu.Lock()
		n := done
		mu.Unlock()
		fmt.Fprintf(p.cmd.ErrOrStderr(), "produced %d records...\n", n)
	}

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	var stop error
	for sc.Scan() {
		line++
		doc := bytes.TrimSpace(sc.Bytes())
		if len(doc) == 0 {
			continue
		}
		mu.Lock()
		failed := firstErr
		mu.Unlock()
		if failed != nil || ctx.Err() != nil {
			break
		}
		rec, err := p.record(ctx, doc)
		if err != nil {
			stop = fmt.Errorf("%s line %d: %w", name, line, err)
			var ue *usageError
			if errors.As(err, &ue) {
				stop = &usageError{stop}
			}
			break
		}
		wg.Add(1)
		p.cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = p.produceErr(err)
					cancel() // stop sending the rest
				}
				return
			}
			done++
			parts[r.Partition]++
		})
		select {
		case <-progress.C:
			report()
		default:
		}
	}
	if err := sc.Err(); err != nil && stop == nil {
		stop = asUsage(fmt.Errorf("%s line %d: %w", name, line+1, err))
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if stop == nil {
		stop = firstErr
	}
	var counts []string
	for part := int32(0); len(counts) < len(parts); part++ {
		if n, ok := parts[part]; ok {
			counts = append(counts, strconv.Itoa(int(part))+":"+strconv.Itoa(n))
		}
	}
	if stop != nil {
		fmt.Fprintf(p.cmd.ErrOrStderr(), "produced %d records to %s before stopping\n", done, p.f.topic)
		return stop
	}
	fmt.Fprintf(p.cmd.OutOrStdout(), "produced %d %s records to %s (per partition: %s)\n", done, p.f.typ, p.f.topic, strings.Join(counts, " "))
	return nil
}

// checkTopologyType refuses a --type the topology does not know, unless
// --topic names a topic outside the topology, and a topology topic that
// does not carry the type, unless --force. f.typ is a full name.
func checkTopologyType(t *topology.Topology, f *produceFlags) error {
	var known []string
	carries := map[string][]string{}
	for _, tp := range t.Topics {
		for _, e := range tp.Events {
			known = append(known, t.ShortName(e))
			carries[tp.Name] = append(carries[tp.Name], t.ShortName(e))
		}
	}
	short := t.ShortName(f.typ)
	home, isKnown := t.TopicOf(f.typ)
	onTopic, topologyTopic := carries[f.topic]
	switch {
	case f.force:
		return nil
	case !isKnown && (f.topic == "" || topologyTopic):
		return usagef("unknown event type %q%s: %s has %s (pass --topic for a topic outside the topology)",
			short, didYouMean(short, known), t.File, strings.Join(known, ", "))
	case isKnown && topologyTopic && f.topic != home:
		return usagef("topic %s carries %s, not %s, which goes on %s (drop --topic; --force sends it anyway)",
			f.topic, strings.Join(onTopic, ", "), short, home)
	}
	return nil
}
