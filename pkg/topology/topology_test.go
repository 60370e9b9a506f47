package topology

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each file in testdata/invalid is a small topology whose leading comments
// say what validation must report: "# want error LINE: TEXT" or
// "# want warning LINE: TEXT". Every wanted problem must be reported, and
// nothing else.
func TestValidationProblems(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	wantRe := regexp.MustCompile(`^# want (error|warning) (\d+): (.+)$`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wantErrs, wantWarns []string
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				m := wantRe.FindStringSubmatch(sc.Text())
				if m == nil {
					continue
				}
				w := fmt.Sprintf("%s:%s: %s", f, m[2], m[3])
				if m[1] == "error" {
					wantErrs = append(wantErrs, w)
				} else {
					wantWarns = append(wantWarns, w)
				}
			}
			if len(wantErrs)+len(wantWarns) == 0 {
				t.Fatal("file wants nothing: add '# want error LINE: TEXT' comments")
			}
			topo, err := Parse(f, data)
			var got, gotWarns []Problem
			var te *Error
			switch {
			case errors.As(err, &te):
				got = te.Problems
			case err != nil:
				t.Fatalf("error is %T, want *Error: %v", err, err)
			default:
				gotWarns = topo.Warnings
			}
			check(t, "error", wantErrs, got)
			check(t, "warning", wantWarns, gotWarns)
		})
	}
}

func check(t *testing.T, kind string, want []string, got []Problem) {
	t.Helper()
	used := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if !used[i] && strings.HasPrefix(g.String(), w) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing %s %q; got:\n%s", kind, w, list(got))
		}
	}
	for i, g := range got {
		if !used[i] {
			t.Errorf("unexpected %s %q", kind, g.String())
		}
	}
}

func list(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

func TestExampleTopology(t *testing.T) {
	topo, err := Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Warnings) != 0 {
		t.Errorf("warnings: %v", topo.Warnings)
	}
	const ns = "troupe.example.orders."
	if topo.App != "orders" || topo.Saga != "order-fulfillment" || topo.Key != "orderId" || topo.Partitions != 8 ||
		topo.Trigger != ns+"OrderPlaced" || topo.Deadline != 30*time.Second || topo.Guarantee != ExactlyOnce {
		t.Errorf("header: %+v", topo)
	}
	if got := topo.StepNames(); !slices.Equal(got, []string{"payment", "inventory", "shipping"}) {
		t.Errorf("steps %v", got)
	}
	pay, _ := topo.Step("payment")
	if pay.Compensation != (Compensation{Command: ns + "RefundPayment", Ack: ns + "PaymentRefunded"}) || pay.CompletedBy != ns+"PaymentAuthorized" {
		t.Errorf("payment: %+v", pay)
	}
	if got := topo.InputTopics("payment"); !slices.Equal(got, []string{"compensations", "orders"}) {
		t.Errorf("payment inputs %v", got)
	}
	if tp, _ := topo.TopicOf("OutOfStock"); tp != "inventory" {
		t.Errorf("OutOfStock on %q", tp)
	}
	specs := topo.TopicSpecs()
	byName := map[string]TopicSpec{}
	for _, s := range specs {
		byName[s.Name] = s
	}
	for name, policy := range map[string]string{
		"orders": "delete", "orders.payment.changelog": "compact", "orders.payment.retry": "delete",
		"orders.shipping.dlq": "delete", "orders.saga.order-fulfillment.changelog": "compact",
		"orders.saga.order-fulfillment.ended": "delete", "_schemas": "compact",
		// The coordinator runs as step saga.order-fulfillment, with a
		// step's retry topic and DLQ (issue 16: plan omitted them).
		"orders.saga.order-fulfillment.retry": "delete", "orders.saga.order-fulfillment.dlq": "delete",
	} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("plan lacks %s", name)
			continue
		}
		if s.Configs["cleanup.policy"] != policy {
			t.Errorf("%s cleanup.policy %q, want %q", name, s.Configs["cleanup.policy"], policy)
		}
		if name != "_schemas" && s.Partitions != 8 {
			t.Errorf("%s has %d partitions", name, s.Partitions)
		}
	}
	if r := byName["orders.saga.order-fulfillment.dlq"].Configs["retention.ms"]; r != DLQRetention {
		t.Errorf("orders.saga.order-fulfillment.dlq retention.ms %q, want %s like every DLQ", r, DLQRetention)
	}
	if want := 5 + 3*3 + 5; len(specs) != want {
		t.Errorf("%d topics, want %d", len(specs), want)
	}
}

func TestGraphs(t *testing.T) {
	topo, err := Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := topo.Mermaid()
	for _, want := range []string{
		"flowchart LR",
		"e_troupe_example_orders_OrderPlaced --> s_payment",
		"s_payment --> e_troupe_example_orders_PaymentDeclined",
		"e_troupe_example_orders_RefundPayment -. compensate .-> s_payment",
		"class e_troupe_example_orders_ShipmentScheduled done",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, m)
		}
	}
	d := topo.DOT()
	for _, want := range []string{`digraph "order-fulfillment"`, `"e_troupe_example_orders_ReleaseInventory" -> "s_inventory" [style=dashed`} {
		if !strings.Contains(d, want) {
			t.Errorf("dot lacks %q:\n%s", want, d)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	files = append(files, "../../topology/orders.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := Parse("fuzz.yaml", data)
		if err == nil && topo == nil {
			t.Fatal("nil topology without error")
		}
		var te *Error
		if err != nil && !errors.As(err, &te) {
			t.Fatalf("error of type %T", err)
		}
	})
}

func TestRetryPerStep(t *testing.T) {
	src := `app: shop
saga: s
key: id
trigger: OrderPlaced
completes_on: [Shipped]
topics:
  - {name: orders, events: [OrderPlaced, Shipped]}
steps:
  - {name: a, on: [OrderPlaced], emits: [Shipped]}
  - name: b
    on: [OrderPlaced]
    retry: {attempts: 2, jitter: 0}
retry:
  attempts: 7
  max_backoff: 1m
`
	topo, err := Parse("retry.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	all := Retry{Attempts: 7, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Minute, Jitter: 0.2}
	if got := topo.RetryFor("a"); got != all {
		t.Errorf("a: %+v, want the topology's %+v", got, all)
	}
	b := all
	b.Attempts, b.Jitter = 2, 0
	if got := topo.RetryFor("b"); got != b {
		t.Errorf("b: %+v, want %+v", got, b)
	}
	if def, _ := Parse("x.yaml", []byte(strings.Replace(src, "retry:\n  attempts: 7\n  max_backoff: 1m\n", "", 1))); def.Retry != (Retry{5, 100 * time.Millisecond, 5 * time.Second, 0.2}) {
		t.Errorf("default retry %+v", def.Retry)
	}
}

// The diagram's layout of the example saga: the happy path on one row, in
// the order it runs; failing events below it; each compensation command
// under the step it undoes, its ack one rank further; no two boxes overlap.
func TestLayout(t *testing.T) {
	topo, err := Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, vertical := range []bool{false, true} {
		l := topo.Graph().Layout(vertical)
		at := map[string]PlacedNode{}
		for _, n := range l.Nodes {
			at[n.Label] = n
		}
		along := func(n PlacedNode) int { return map[bool]int{false: n.X, true: n.Y}[vertical] }
		across := func(n PlacedNode) int { return map[bool]int{false: n.Y, true: n.X}[vertical] }
		happy := []string{"OrderPlaced", "payment", "PaymentAuthorized", "inventory", "InventoryReserved", "shipping", "ShipmentScheduled"}
		for i, name := range happy {
			n := at[name]
			if across(n) != 0 || i > 0 && along(n) <= along(at[happy[i-1]]) {
				t.Errorf("vertical=%v: %s at %d,%d: not next on the first row", vertical, name, n.X, n.Y)
			}
		}
		for _, c := range [][2]string{{"PaymentDeclined", "PaymentAuthorized"}, {"RefundPayment", "payment"}, {"ReleaseInventory", "inventory"}} {
			n, of := at[c[0]], at[c[1]]
			if along(n) != along(of) || across(n) <= across(of) {
				t.Errorf("vertical=%v: %s at %d,%d is not below %s at %d,%d", vertical, c[0], n.X, n.Y, c[1], of.X, of.Y)
			}
		}
		if r, a := at["RefundPayment"], at["PaymentRefunded"]; across(a) != across(r) || along(a) <= along(r) {
			t.Errorf("vertical=%v: the ack PaymentRefunded (%d,%d) is not beside its command (%d,%d)", vertical, a.X, a.Y, r.X, r.Y)
		}
		for i, a := range l.Nodes {
			if a.X < 0 || a.Y < 0 || a.X+a.W > l.Width || a.Y+a.H > l.Height {
				t.Errorf("vertical=%v: %s outside the %dx%d drawing", vertical, a.Label, l.Width, l.Height)
			}
			for _, b := range l.Nodes[i+1:] {
				if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
					t.Errorf("vertical=%v: %s and %s overlap", vertical, a.Label, b.Label)
				}
			}
		}
		if len(l.Edges) != len(topo.Graph().Edges) || !strings.HasPrefix(l.Edges[0].Path, "M") {
			t.Errorf("vertical=%v: edges %+v", vertical, l.Edges)
		}
	}
}
