package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
)

const orderJSON = `{"orderId":"o-1001","customerId":"c-42","amountCents":12999,"currency":"EUR",
	"items":[{"sku":"BOOK-1","quantity":2}],
	"shipTo":{"name":"Ada","line1":"12 Main St","city":"London","country":"GB"},
	"placedAt":"2024-05-01T12:00:00Z"}`

func TestProduceAndTail(t *testing.T) {
	s := startAvroStack(t)
	s.expect(t, exitOK, nil, "schemas", "register", "--dir", schemaDir, "--topology", topologyFile)

	// One document: prints where it went.
	s.expect(t, exitOK, []string{"produced troupe.example.orders.OrderPlaced key o-1001 to orders partition", "offset 0"},
		"produce", "--topic", "orders", "--type", "troupe.example.orders.OrderPlaced", "--key", "o-1001", "--data", orderJSON, "--topology", topologyFile)

	// A file of JSON lines; topic, namespace and key field from the topology;
	// epoch millis for the time.
	var lines []string
	for _, id := range []string{"o-2", "o-3", "o-4"} {
		lines = append(lines, strings.NewReplacer("o-1001", id, `"2024-05-01T12:00:00Z"`, "1714564800000", "\n\t", " ").Replace(orderJSON))
	}
	file := filepath.Join(t.TempDir(), "orders.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.expect(t, exitOK, []string{"produced 3 troupe.example.orders.OrderPlaced records to orders (per partition:"},
		"produce", "--type", "OrderPlaced", "--file", file, "--topology", topologyFile)
	// stdin works too.
	out, errOut, code := s.run(t, `{"orderId":"o-9","sku":"OOS-1"}`+"\n", "produce", "--type", "OutOfStock", "--file", "-", "--topology", topologyFile)
	if code != exitOK || !strings.Contains(out, "produced 1 troupe.example.orders.OutOfStock records to inventory") {
		t.Fatalf("stdin: %d\n%s%s", code, out, errOut)
	}

	// What was produced: the right key, partition by key, CloudEvents
	// headers, and Avro that a Go consumer decodes into the Go type.
	recs := consumeAll(t, s.cl, "orders", 4)
	reg, _ := avro.NewRegistryClient(s.registry)
	serde := avro.NewSerde(reg)
	if err := orders.Register(serde); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		meta, err := event.FromRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Source != "troupe-cli" || meta.Type != "troupe.example.orders.OrderPlaced" || meta.IDDerived || meta.SagaID != string(r.Key) {
			t.Errorf("headers of %s: %+v", r.Key, meta)
		}
		if ct, _ := event.Header(r, event.HeaderContentType); ct != "application/avro" {
			t.Errorf("content-type = %q", ct)
		}
		_, v, err := serde.Decode(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		o := v.(orders.OrderPlaced)
		if o.OrderID != string(r.Key) || o.AmountCents != 12999 || o.PlacedAt.UnixMilli() != 1714564800000 || o.Items[0].SKU != "BOOK-1" {
			t.Errorf("decoded %+v", o)
		}
	}

	// tail prints them as JSON lines and stops at the end.
	out = s.expect(t, exitOK, nil, "tail", "--topic", "orders")
	got := tailLines(t, out)
	if len(got) != 4 {
		t.Fatalf("tail printed %d lines, want 4:\n%s", len(got), out)
	}
	keys := map[string]bool{}
	for _, l := range got {
		keys[*l.Key] = true
		var v map[string]any
		if err := json.Unmarshal(l.Value, &v); err != nil {
			t.Fatal(err)
		}
		if l.Type != "troupe.example.orders.OrderPlaced" || l.Headers["ce_source"] != "troupe-cli" || v["orderId"] != *l.Key ||
			v["placedAt"] != "2024-05-01T12:00:00Z" || l.SchemaID == nil {
			t.Errorf("tail line %+v value %v", l, v)
		}
	}
	if len(keys) != 4 {
		t.Errorf("keys %v", keys)
	}
	if out := s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--from", "latest"); out != "" {
		t.Errorf("--from latest printed %s", out)
	}
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--max", "2")); len(got) != 2 {
		t.Errorf("--max 2 printed %d", len(got))
	}
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--from", "1h")); len(got) != 4 {
		t.Errorf("--from 1h printed %d", len(got))
	}
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--from", "2999-01-01T00:00:00Z")); len(got) != 0 {
		t.Errorf("--from the future printed %d", len(got))
	}
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "orders", "--type", "OutOfStock")); len(got) != 0 {
		t.Errorf("--type OutOfStock on orders printed %d", len(got))
	}
	if got := tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "inventory", "-t", "troupe.example.orders.OutOfStock")); len(got) != 1 {
		t.Errorf("--type printed %d", len(got))
	}

	// A record nobody can decode is shown with its error, and tail goes on.
	bad := &kgo.Record{Topic: "inventory", Key: []byte("o-x"), Value: []byte("not avro")}
	if err := s.cl.ProduceSync(context.Background(), bad).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got = tailLines(t, s.expect(t, exitOK, nil, "tail", "--topic", "inventory"))
	if len(got) != 2 || !strings.Contains(got[1].Error, "not Confluent wire format") || got[1].Raw == "" {
		t.Fatalf("undecodable record: %+v", got)
	}
}

func TestProduceBadInput(t *testing.T) {
	s := startAvroStack(t)
	s.expect(t, exitOK, nil, "schemas", "register", "--dir", schemaDir, "--topology", topologyFile)
	args := func(extra ...string) []string {
		return append([]string{"produce", "--topic", "orders", "--type", "troupe.example.orders.OrderPlaced", "--topology", topologyFile}, extra...)
	}
	s.expect(t, exitUsage, []string{"give exactly one of --data JSON or --file"}, args()...)
	s.expect(t, exitUsage, []string{`field items[0].quantity: expected int (32-bit integer), got string "two"`},
		args("--data", strings.Replace(orderJSON, `"quantity":2`, `"quantity":"two"`, 1))...)
	s.expect(t, exitUsage, []string{"field placedAt: expected long timestamp-millis (RFC 3339 time or epoch milliseconds)"},
		args("--data", strings.Replace(orderJSON, `"2024-05-01T12:00:00Z"`, `"May 1st"`, 1))...)
	s.expect(t, exitUsage, []string{`the document has no "orderId" field to use as the key`},
		args("--data", `{"customerId":"c"}`)...)
	s.expect(t, exitUsage, []string{"not valid JSON"}, args("--key", "k", "--data", `{"orderId":`)...)
	s.expect(t, exitUsage, []string{"subject elsewhere-troupe.example.orders.OrderPlaced is not in the registry", "troupe schemas register"},
		"produce", "--topic", "elsewhere", "--type", "troupe.example.orders.OrderPlaced", "--data", orderJSON, "--topology", topologyFile)
	file := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(orderJSON, "\n\t", " ")+"\n"+`{"orderId":"o-2","amountCents":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.expect(t, exitUsage, []string{"bad.jsonl line 2:", "field customerId", "missing", "produced 1 records to orders before stopping"}, args("--file", file)...)

	_, errOut, code := s.runWithRegistry(t, "http://127.0.0.1:1", args("--data", orderJSON)...)
	if code != exitFailure || !strings.Contains(errOut, "cannot reach http://127.0.0.1:1") || !strings.Contains(errOut, "TROUPE_REGISTRY_URL") {
		t.Fatalf("unreachable registry: exit %d: %s", code, errOut)
	}
	_, errOut, code = s.runWithRegistry(t, "http://127.0.0.1:1", "tail", "--topic", "orders")
	if code != exitFailure || !strings.Contains(errOut, "cannot reach http://127.0.0.1:1") {
		t.Fatalf("tail with an unreachable registry: exit %d: %s", code, errOut)
	}
	s.expect(t, exitUsage, []string{"--topic is required"}, "tail")
	s.expect(t, exitUsage, []string{`--from "yesterday"`}, "tail", "--topic", "orders", "--from", "yesterday")
	s.expect(t, exitFailure, []string{"topic nope"}, "tail", "--topic", "nope")
}

func consumeAll(t *testing.T, cl *kgo.Client, topic string, n int) []*kgo.Record {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		f := c.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d records from %s", len(out), n, topic)
		}
		out = append(out, f.Records()...)
	}
	return out
}

func tailLines(t *testing.T, out string) []tailLine {
	t.Helper()
	var lines []tailLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var tl tailLine
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatalf("tail line %q: %v", l, err)
		}
		lines = append(lines, tl)
	}
	return lines
}
