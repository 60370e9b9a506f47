package runner

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/topology"
	topologies "github.com/troupehq/troupe/topology"
)

func exampleTopology(t *testing.T, edit func(string) string) *topology.Topology {
	t.Helper()
	text := string(topologies.Orders)
	if edit != nil {
		text = edit(text)
	}
	topo, err := topology.Parse("orders.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestCheckHandlers(t *testing.T) {
	const ns = orders.Namespace + "."
	topo := exampleTopology(t, nil)
	for _, tc := range []struct {
		name    string
		step    string
		handles []string
		raw     bool
		want    []string // substrings of the error; none: no error
	}{
		{name: "payment as the example has it", step: "payment", handles: []string{ns + "RefundPayment", ns + "OrderPlaced", "troupe.saga.SagaEnded"}},
		{name: "a raw handler takes every input", step: "payment", raw: true},
		{name: "shipping", step: "shipping", handles: []string{ns + "InventoryReserved"}},
		{name: "no handler for the compensation", step: "payment", handles: []string{ns + "OrderPlaced"},
			want: []string{"step payment: the handlers and the topology disagree", "orders.yaml gives step payment on: [OrderPlaced] and compensation RefundPayment",
				"the program handles [OrderPlaced]", "no handler for RefundPayment"}},
		{name: "a handler the topology does not give the step", step: "shipping", handles: []string{ns + "InventoryReserved", ns + "PaymentAuthorized"},
			want: []string{"on: [InventoryReserved]", "the program handles [InventoryReserved, PaymentAuthorized]", "a handler for PaymentAuthorized, which the topology does not give the step"}},
		{name: "both", step: "inventory", handles: []string{ns + "OrderPlaced", ns + "ReleaseInventory"},
			want: []string{"no handler for PaymentAuthorized", "a handler for OrderPlaced"}},
		{name: "unknown step", step: "billing", want: []string{`unknown step "billing"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkHandlers(topo, tc.step, tc.handles, tc.raw)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("error %v, want a usage error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestCheckTypes(t *testing.T) {
	serde, err := appSerde(App{Types: orders.Register})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkTypes(exampleTopology(t, nil), serde); err != nil {
		t.Fatalf("the example: %v", err)
	}
	renamed := exampleTopology(t, func(s string) string { return strings.ReplaceAll(s, "PaymentAuthorized", "PaymentApproved") })
	err = checkTypes(renamed, serde)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "event type PaymentApproved (troupe.example.orders.PaymentApproved): the app registers no Go type for it") ||
		!strings.Contains(err.Error(), "the program registers types the topology does not declare: troupe.example.orders.PaymentAuthorized") {
		t.Fatalf("renamed type: %v", err)
	}
	// The app's serde: without Types, nothing is known.
	empty, _ := appSerde(App{})
	if err := checkTypes(renamed, empty); err == nil || !strings.Contains(err.Error(), "declares 11 event type(s)") {
		t.Fatalf("no types: %v", err)
	}
}

// Run refuses a topology whose types the program cannot decode, before it
// opens anything (the state dir stays absent).
func TestRunRefusesUnknownTypes(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/renamed.yaml"
	text := strings.ReplaceAll(string(topologies.Orders), "PaymentAuthorized", "PaymentApproved")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	app := App{Name: "troupe", Types: orders.Register, Steps: orders.Steps}
	g := &Globals{Brokers: "127.0.0.1:1", Registry: "http://127.0.0.1:1"}
	err := Run(t.Context(), app, g, RunOptions{Topology: file, Step: "shipping", StateDir: dir + "/state", HTTP: "127.0.0.1:0"})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "PaymentApproved") {
		t.Fatalf("run: %v", err)
	}
	if _, serr := os.Stat(dir + "/state"); !os.IsNotExist(serr) {
		t.Errorf("state dir made before the refusal: %v", serr)
	}
	err = Run(t.Context(), app, g, RunOptions{Topology: file, Coordinator: "order-fulfillment", StateDir: dir + "/state", HTTP: "127.0.0.1:0"})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "PaymentApproved") {
		t.Fatalf("run --coordinator: %v", err)
	}
}

// The step runtime lists its handlers, for checkStepHandlers.
var _ handlerLister = (*step.Runtime)(nil)

// Run refuses a step whose handlers and on: disagree, naming both sides,
// before it listens or opens its state.
func TestRunRefusesHandlersThatDisagree(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/extra-input.yaml"
	text := strings.Replace(string(topologies.Orders), "on: [InventoryReserved]", "on: [InventoryReserved, OutOfStock]", 1)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	app := App{Name: "troupe", Types: orders.Register, Steps: orders.Steps}
	g := &Globals{Brokers: "127.0.0.1:1", Registry: "http://127.0.0.1:1"}
	err := Run(t.Context(), app, g, RunOptions{Topology: file, Step: "shipping", StateDir: dir + "/state", HTTP: "127.0.0.1:0"})
	want := "step shipping: the handlers and the topology disagree: " + file + " gives step shipping on: [InventoryReserved, OutOfStock]; the program handles [InventoryReserved]: no handler for OutOfStock"
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
		t.Fatalf("run: %v\nwant %q", err, want)
	}
	// The example's own steps agree with its topology.
	topo := exampleTopology(t, nil)
	env, err := NewEnv(app, g.KafkaConfig(), g.Registry, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for name, def := range orders.Steps(topo) {
		rt, err := env.NewStep(topo, def, name, StepOptions{StateDir: dir + "/" + name})
		if err != nil {
			t.Fatal(err)
		}
		if err := checkStepHandlers(topo, name, rt); err != nil {
			t.Errorf("the example's step %s: %v", name, err)
		}
	}
}
