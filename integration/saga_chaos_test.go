package integration

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/example/orders"
)

// A broker of a three-node cluster killed (kill -9) while sagas run, and
// restarted a while later: every saga still ends as DESIGN §11 says, each
// business effect happens once (no double charge, reservation or
// shipment), and the compensation commands come in reverse order (a
// command re-sent after its timeout may repeat, never reorder).
func TestSagaSurvivesBrokerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster; run without -short")
	}
	c := kafkaharness.StartCluster(t, 3)
	if c.Fake() {
		t.Skip("kfake mishandles a consumer across a leader change (see TestThreeBrokerFailover)")
	}
	// A 45 s deadline: the partitions the killed node led stall until its
	// leadership moves or it is back (tens of seconds on a loaded 2-core
	// machine), and a saga that stalls past its deadline rightly times
	// out, which is not what this test is about. SLOW- orders still time
	// out: their inventory answer comes after 60 s.
	e := newSagaEnvOn(t, c.Addrs(), "45s", "replication: 1", "replication: 3")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	e.processing(60 * time.Second) // before any fault: see processing
	ctx := context.Background()

	want := map[string]orders.Outcome{}
	wave := func(name string) {
		t.Helper()
		w := map[string]orders.Outcome{}
		for _, o := range []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed, orders.OutcomeTimedOut} {
			for _, id := range orderIDs(name+"-"+string(o), 4) {
				w[id] = o
			}
		}
		e.placeOrders(ctx, w)
		maps.Copy(want, w)
	}

	wave("before")
	time.Sleep(2 * time.Second) // the first wave in flight
	if err := c.KillBroker(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed node %d", c.NodeID(0))
	wave("down")
	time.Sleep(5 * time.Second)
	if err := c.StartBroker(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted node %d", c.NodeID(0))
	wave("after")

	got := e.waitEnded(coord.http, want, 3*time.Minute)
	chains := e.chains(ctx, 30*time.Second, func(ch map[string][]string) bool {
		for id, o := range want {
			if count(ch[id], "RefundPayment")+count(ch[id], "ReleaseInventory") < len(wantOf[o].commands) ||
				count(ch[id], "PaymentRefunded")+count(ch[id], "InventoryReleased") < len(wantOf[o].commands) {
				return false
			}
		}
		return true
	})
	// A re-sent command repeats; it must not reorder.
	squeezed := map[string][]string{}
	for id, ch := range chains {
		cmds := slices.DeleteFunc(slices.Clone(ch), func(s string) bool { return !slices.Contains(commandTypes, s) })
		squeezed[id] = slices.Compact(cmds)
	}
	checkEnds(t, want, got, squeezed)
	bad := 0
	for id := range want {
		for _, effect := range []string{"PaymentAuthorized", "InventoryReserved", "ShipmentScheduled", "ShipmentFailed"} {
			if n := count(chains[id], effect); n > 1 {
				if bad++; bad <= 10 {
					t.Errorf("order %s: %s %d times: %v", id, effect, n, chains[id])
				}
			}
		}
	}
	for _, p := range e.procs {
		if p.http != "" {
			t.Logf("%s: %v transactions aborted", p.name, metric(t, p.http, "troupe_step_transaction_aborts_total"))
		}
	}
	t.Logf("%d sagas ended as expected across the loss of a broker", len(want))
}
