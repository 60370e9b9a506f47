package main

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
)

// avroStack is a kfake cluster with the example's topics and a built-in
// registry in front of it, for the schemas, produce and tail commands.
type avroStack struct {
	brokers  string
	registry string
	cl       *kgo.Client
}

func startAvroStack(t *testing.T) *avroStack {
	t.Helper()
	return startAvroStackWith(t, "orders", "payments", "inventory", "shipping", "compensations")
}

// startAvroStackWith is startAvroStack with these topics (3 partitions) only.
func startAvroStackWith(t *testing.T, topics ...string) *avroStack {
	t.Helper()
	ctx := context.Background()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	for _, topic := range topics {
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := registry.New(registry.Config{Kafka: kafka.Config{Brokers: c.ListenAddrs()}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("registry not ready")
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &avroStack{brokers: c.ListenAddrs()[0], registry: hs.URL, cl: cl}
}

// run runs the CLI against the stack and returns stdout, stderr and the
// exit code main would return.
func (s *avroStack) run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(args, "--brokers", s.brokers, "--registry", s.registry, "--log-level", "error"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return out.String(), errb.String(), exitOK
	}
	errb.WriteString("error: " + err.Error() + "\n")
	var ue *usageError
	if errors.As(err, &ue) {
		return out.String(), errb.String(), exitUsage
	}
	return out.String(), errb.String(), exitFailure
}

// expect runs the CLI and checks the exit code and that the output has
// every wanted string.
func (s *avroStack) expect(t *testing.T, code int, want []string, args ...string) string {
	t.Helper()
	out, errOut, got := s.run(t, "", args...)
	all := out + errOut
	if got != code {
		t.Fatalf("troupe %s: exit %d, want %d\n%s", strings.Join(args, " "), got, code, all)
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("troupe %s: output lacks %q:\n%s", strings.Join(args, " "), w, all)
		}
	}
	return out
}

const (
	schemaDir    = "../../schemas"
	topologyFile = "../../topology/orders.yaml"
)

// copySchemas copies schemas/ to a temporary directory, applying edits
// (file name -> old -> new).
func copySchemas(t *testing.T, edits map[string][2]string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.avsc"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in %s: %v", schemaDir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if e, ok := edits[filepath.Base(f)]; ok {
			if !strings.Contains(text, e[0]) {
				t.Fatalf("%s has no %q to edit", f, e[0])
			}
			text = strings.Replace(text, e[0], e[1], 1)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSchemasCommands(t *testing.T) {
	s := startAvroStack(t)
	topo := []string{"--dir", schemaDir, "--topology", topologyFile}

	out := s.expect(t, exitOK, []string{
		"OrderPlaced.avsc  orders-troupe.example.orders.OrderPlaced: new, would be version 1",
		"SagaEnded.avsc  orders.saga.order-fulfillment.ended-troupe.saga.SagaEnded: new, would be version 1",
	}, append([]string{"schemas", "check"}, topo...)...)
	if n := strings.Count(out, "would be version 1"); n != 12 {
		t.Fatalf("check found %d new schemas, want 12:\n%s", n, out)
	}
	s.expect(t, exitOK, []string{
		"orders-troupe.example.orders.OrderPlaced: registered version 1, id 3",
		"compensations-troupe.example.orders.RefundPayment: registered version 1",
	}, append([]string{"schemas", "register"}, topo...)...)
	out = s.expect(t, exitOK, nil, append([]string{"schemas", "register"}, topo...)...)
	if n := strings.Count(out, "unchanged (version 1"); n != 12 {
		t.Fatalf("second register: %d unchanged, want 12:\n%s", n, out)
	}

	// A compatible change: a new field with a default.
	compatible := copySchemas(t, map[string][2]string{"OrderPlaced.avsc": {
		`{"name": "currency", "type": "string", "doc": "ISO 4217 code, e.g. EUR."},`,
		`{"name": "currency", "type": "string"}, {"name": "channel", "type": "string", "default": "web"},`}})
	s.expect(t, exitOK, []string{"orders-troupe.example.orders.OrderPlaced: compatible, would be version 2", "PaymentDeclined.avsc  payments-troupe.example.orders.PaymentDeclined: unchanged"},
		"schemas", "check", "--dir", compatible, "--topology", topologyFile)

	// Incompatible changes, each named: a field added without a default,
	// a changed type.
	broken := copySchemas(t, map[string][2]string{
		"OrderPlaced.avsc":     {`{"name": "currency", "type": "string", "doc": "ISO 4217 code, e.g. EUR."},`, `{"name": "currency", "type": "string"}, {"name": "channel", "type": "string"},`},
		"PaymentDeclined.avsc": {`{"name": "reason", "type": "string"}`, `{"name": "reason", "type": "int"}`},
	})
	for _, cmd := range []string{"check", "register"} {
		s.expect(t, exitFailure, []string{
			"orders-troupe.example.orders.OrderPlaced: INCOMPATIBLE with version 1",
			`field "channel" (string) was added without a default`,
			`field "reason" changed type from string (version 1) to int`,
			"2 incompatible schema(s)",
		}, "schemas", cmd, "--dir", broken, "--topology", topologyFile)
	}
	// check finds the subjects in the registry without a topology, too.
	s.expect(t, exitFailure, []string{`field "channel" (string) was added without a default`}, "schemas", "check", "--dir", broken, "--topology", "")

	s.expect(t, exitOK, []string{"FILE", "OrderPlaced.avsc", "orders-troupe.example.orders.OrderPlaced", "unchanged  1", "orders.saga.order-fulfillment.ended-troupe.saga.SagaEnded"},
		append([]string{"schemas", "list"}, topo...)...)
	s.expect(t, exitOK, []string{"orders-troupe.example.orders.OrderPlaced", "incompatible  (latest 1)"},
		"schemas", "list", "--dir", broken, "--topology", topologyFile)

	// --topic puts everything on one topic.
	s.expect(t, exitOK, []string{"audit-troupe.example.orders.OutOfStock: registered version 1"}, "schemas", "register", "--dir", schemaDir, "--topic", "audit")
}

func TestSchemasBadInput(t *testing.T) {
	s := startAvroStack(t)
	s.expect(t, exitUsage, []string{"--dir nowhere is not a directory"}, "schemas", "check", "--dir", "nowhere")
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "Bad.avsc"), []byte(`{"type":"record","name":"Bad","fields":[{"name":"x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s.expect(t, exitUsage, []string{"Bad.avsc: not a valid Avro schema"}, "schemas", "check", "--dir", bad)
	// No topology, no --topic, nothing in the registry: which topic?
	s.expect(t, exitUsage, []string{"no topic for troupe.example.orders.InventoryReleased", "pass --topic"},
		"schemas", "register", "--dir", schemaDir, "--topology", "")
	s.expect(t, exitUsage, []string{"nope.yaml"}, "schemas", "register", "--dir", schemaDir, "--topology", "nope.yaml")

	// An unreachable registry names its URL and the setting.
	out, errOut, code := s.runWithRegistry(t, "http://127.0.0.1:1", "schemas", "check", "--dir", schemaDir, "--topology", topologyFile)
	if code != exitFailure || !strings.Contains(errOut, "http://127.0.0.1:1") || !strings.Contains(errOut, "TROUPE_REGISTRY_URL") {
		t.Fatalf("unreachable registry: exit %d\n%s%s", code, out, errOut)
	}
}

// runWithRegistry runs the CLI with another registry URL.
func (s *avroStack) runWithRegistry(t *testing.T, url string, args ...string) (string, string, int) {
	t.Helper()
	saved := s.registry
	s.registry = url
	defer func() { s.registry = saved }()
	return s.run(t, "", args...)
}

// topics apply --register-schemas is the one set-up step of a deployment:
// the topology's topics, then every schema under its topic's subject; run
// again, it changes nothing.
func TestTopicsApplyRegistersSchemas(t *testing.T) {
	s := startAvroStackWith(t)
	s.expect(t, exitOK, []string{
		"created 18 topic(s)",
		"orders-troupe.example.orders.OrderPlaced: registered version 1",
		"orders.saga.order-fulfillment.ended-troupe.saga.SagaEnded: registered version 1",
	}, "topics", "apply", "--topology", topologyFile, "--register-schemas", schemaDir)
	out := s.expect(t, exitOK, []string{"created 0 topic(s)", "orders-troupe.example.orders.OrderPlaced: unchanged (version 1"},
		"topics", "apply", "--topology", topologyFile, "--register-schemas", schemaDir)
	if strings.Contains(out, "registered") {
		t.Errorf("second apply registered again:\n%s", out)
	}
	s.expect(t, exitUsage, []string{"--dir nowhere is not a directory"},
		"topics", "apply", "--topology", topologyFile, "--register-schemas", "nowhere")
}
