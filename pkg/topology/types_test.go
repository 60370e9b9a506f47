package topology

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestCheckTypes(t *testing.T) {
	data, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := Parse("orders.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	known := orig.EventTypes()
	if len(known) != 11 || known[0] != "troupe.example.orders.OrderPlaced" {
		t.Fatalf("EventTypes = %v", known)
	}
	if p := orig.CheckTypes(known, "no schema", "add one"); len(p) != 0 {
		t.Fatalf("every type known, yet %v", p)
	}

	// Every type renamed, or misspelt, in a copy of the example.
	line := func(text, of string) int {
		i := strings.Index(text, of)
		if i < 0 {
			t.Fatalf("no %q in the topology", of)
		}
		return strings.Count(text[:i], "\n") + 1
	}
	for _, tc := range []struct {
		from, to, wantHint string
	}{
		{"PaymentAuthorized", "PaymentApproved", "write schemas/X.avsc"},
		{"PaymentAuthorized", "PaymentAuthorised", "did you mean PaymentAuthorized? write schemas/X.avsc"},
	} {
		text := strings.ReplaceAll(string(data), tc.from, tc.to)
		topo, err := Parse("renamed.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		got := topo.CheckTypes(known, "no schema in schemas/", "write schemas/X.avsc")
		want := Problem{File: "renamed.yaml", Line: line(text, tc.to+","),
			Msg: "event type " + tc.to + " (troupe.example.orders." + tc.to + "): no schema in schemas/", Hint: tc.wantHint}
		if len(got) != 1 || got[0] != want {
			t.Errorf("renamed to %s:\n got %v\nwant %v", tc.to, got, want)
		}
		if u := topo.Undeclared(append(known, EndedType)); !slices.Equal(u, []string{"troupe.example.orders." + tc.from}) {
			t.Errorf("renamed to %s: Undeclared = %v", tc.to, u)
		}
	}

	// Nothing known: every type, each at its line.
	got := orig.CheckTypes(nil, "no Go type", "register one")
	if len(got) != 11 || got[0].Line != line(string(data), "[OrderPlaced]") || got[10].Msg != "event type ReleaseInventory (troupe.example.orders.ReleaseInventory): no Go type" {
		t.Errorf("nothing known: %v", got)
	}
}

func TestSubjectTopic(t *testing.T) {
	data, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := Parse("orders.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	for ev, want := range map[string]string{
		"troupe.example.orders.OrderPlaced":   "orders",
		"PaymentRefunded":                     "payments",
		"troupe.example.orders.RefundPayment": "compensations",
		EndedType:                             "orders.saga.order-fulfillment.ended",
		"troupe.example.orders.Nope":          "",
	} {
		got, ok := topo.SubjectTopic(ev)
		if got != want || ok != (want != "") {
			t.Errorf("SubjectTopic(%s) = %q, %v; want %q", ev, got, ok, want)
		}
	}
	if slices.Contains(topo.EventTypes(), EndedType) {
		t.Error("EventTypes lists SagaEnded, which no topic of the file declares")
	}
}
