package integration

import (
	"context"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/example/orders"
)

// The example saga's steps (README: The example saga) as separate `troupe run` processes
// against the real broker: 1,000 orders with known outcomes; each order's
// chain of events is exactly what the rules predict. Without the
// coordinator, nothing is compensated.
func TestExampleStepsAsProcesses(t *testing.T) {
	e := newSagaEnv(t, "")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	n := 1000
	if testing.Short() {
		n = 200
	}
	outcomes := []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed}
	want := map[string]orders.Outcome{}
	for i, id := range orderIDs("flow", n) {
		want[id] = outcomes[i%len(outcomes)]
	}
	expected := map[orders.Outcome][]string{
		orders.OutcomeCompleted:  {"OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ShipmentScheduled"},
		orders.OutcomeDeclined:   {"OrderPlaced", "PaymentDeclined"},
		orders.OutcomeOutOfStock: {"OrderPlaced", "PaymentAuthorized", "OutOfStock"},
		orders.OutcomeShipFailed: {"OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ShipmentFailed"},
	}
	ctx := context.Background()
	e.placeOrders(ctx, want)

	finished := func(chain []string) bool {
		if len(chain) == 0 {
			return false
		}
		switch chain[len(chain)-1] {
		case "ShipmentScheduled", "PaymentDeclined", "OutOfStock", "ShipmentFailed":
			return true
		}
		return false
	}
	got := e.chains(ctx, 3*time.Minute, func(c map[string][]string) bool {
		for id := range want {
			if !finished(sorted(c[id], expected[want[id]])) {
				return false
			}
		}
		return true
	})
	// Give late duplicates (there must be none) a moment to show up.
	time.Sleep(2 * time.Second)
	got = e.chains(ctx, 20*time.Second, func(c map[string][]string) bool {
		return len(c) >= len(want) && countAll(c) >= countAll(got)
	})
	bad := 0
	for id, o := range want {
		// Events of one order live on different topics; read per topic they
		// arrive in topic order, so compare as the causal chain.
		if chain := sorted(got[id], expected[o]); !slices.Equal(chain, expected[o]) {
			if bad++; bad <= 10 {
				t.Errorf("order %s (%s): events %v, want %v", id, o, got[id], expected[o])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d orders had the wrong events", bad, len(want))
	}
}

// sorted orders a chain's event types as in want (the causal order),
// keeping types not in want at the end so that they show in a failure.
func sorted(chain, want []string) []string {
	out := slices.Clone(chain)
	pos := func(s string) int {
		if i := slices.Index(want, s); i >= 0 {
			return i
		}
		return len(want)
	}
	sort.SliceStable(out, func(i, j int) bool { return pos(out[i]) < pos(out[j]) })
	return out
}

func countAll(c map[string][]string) int {
	n := 0
	for _, v := range c {
		n += len(v)
	}
	return n
}
