package ui_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
	"github.com/troupehq/troupe/pkg/ui"
	topologies "github.com/troupehq/troupe/topology"
)

// An order whose shipment failed, as the saga API answers it: payment and
// inventory completed, then compensated in reverse order, inventory first.
func shipFailed(t0 time.Time) saga.Instance {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	e := func(typ, step, topic string, ms int) saga.Entry {
		return saga.Entry{Type: typ, Step: step, Time: at(ms), Topic: topic, Partition: 4, Offset: int64(ms)}
	}
	return saga.Instance{ID: "o-xx", Saga: "order-fulfillment", Status: saga.Compensated, Reason: "ShipmentFailed",
		Completed: []string{"payment", "inventory"}, Compensated: []string{"inventory", "payment"}, StartedAt: at(0), EndedAt: at(90),
		History: []saga.Entry{
			e("OrderPlaced", "", "orders", 0), e("PaymentAuthorized", "payment", "payments", 13), e("InventoryReserved", "inventory", "inventory", 15),
			e("ShipmentFailed", "shipping", "shipping", 20), e("ReleaseInventory", "inventory", "compensations", 30),
			e("InventoryReleased", "inventory", "inventory", 36), e("RefundPayment", "payment", "compensations", 40),
			{Type: "CompensationTimeout", Step: "payment", Time: at(60), Offset: -1, Note: "no ack; re-sending (attempt 2)"},
			e("PaymentRefunded", "payment", "payments", 90),
		}}
}

type nodeState struct {
	State string `json:"state"`
	Order int    `json:"order"`
	Dead  bool   `json:"dead"`
}

type timeline struct {
	Rows []struct {
		Step, Phase string
		Start, End  float64
		Segments    []struct{ Kind string }
		Notes       []string
	}
}

// The path the page draws on the diagram, and its timeline, from the
// instance and GET /api/topology (app.js's pathOf and timelineOf).
func TestPathAndTimeline(t *testing.T) {
	topo, err := topology.Parse("orders.yaml", topologies.Orders)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC)
	inst := shipFailed(t0)
	fx := map[string]any{"/api/topology": ui.NewTopology(topo), "/api/sagas/o-xx": inst}

	var path map[string]nodeState
	out := runApp(t, fx, "eval", "pathOf(view.topology, "+mustJSON(t, inst)+")")
	if err := json.Unmarshal([]byte(out), &path); err != nil {
		t.Fatalf("pathOf: %v\n%s", err, out)
	}
	want := map[string]nodeState{
		"s_payment": {"compensated", 2, false}, "s_inventory": {"compensated", 1, false}, "s_shipping": {"failed", 0, false},
		"e_troupe_example_orders_OrderPlaced": {State: "done"}, "e_troupe_example_orders_ShipmentFailed": {State: "failed"},
		"e_troupe_example_orders_ShipmentScheduled": {State: "unreached"}, "e_troupe_example_orders_PaymentDeclined": {State: "unreached"},
		"e_troupe_example_orders_RefundPayment": {State: "compensation"}, "e_troupe_example_orders_InventoryReleased": {State: "compensation"},
	}
	for id, w := range want {
		if path[id] != w {
			t.Errorf("node %s: %+v, want %+v", id, path[id], w)
		}
	}

	// Held by a dead letter at inventory: the step is marked.
	held := inst
	held.Status, held.Reason, held.Completed, held.Compensated, held.EndedAt = saga.Running, "", []string{"payment"}, []string{}, time.Time{}
	held.History = slices.Clone(inst.History[:2])
	held.History = append(held.History, saga.Entry{Type: saga.EntryDeadLetter, Step: "inventory", Time: t0.Add(2 * time.Second), Topic: "orders.inventory.dlq",
		Note: "PaymentAuthorized failed after 5 attempts: boom"})
	held.DeadLetters = []saga.DeadLetter{{Step: "inventory", Event: "PaymentAuthorized", Attempts: 5, Partition: 4}}
	out = runApp(t, fx, "eval", "pathOf(view.topology, "+mustJSON(t, held)+")")
	if err := json.Unmarshal([]byte(out), &path); err != nil {
		t.Fatalf("pathOf: %v\n%s", err, out)
	}
	if p := path["s_inventory"]; p.State != "dead" || !p.Dead || path["s_payment"].State != "done" || path["s_shipping"].State != "unreached" {
		t.Errorf("held by a dead letter: inventory %+v, payment %+v, shipping %+v", p, path["s_payment"], path["s_shipping"])
	}

	var tl timeline
	out = runApp(t, fx, "eval", "timelineOf(view.topology, "+mustJSON(t, inst)+")")
	if err := json.Unmarshal([]byte(out), &tl); err != nil {
		t.Fatalf("timelineOf: %v\n%s", err, out)
	}
	var got []string
	for _, r := range tl.Rows {
		got = append(got, r.Phase+" "+r.Step)
	}
	if w := []string{"forward payment", "forward inventory", "forward shipping", "compensation inventory", "compensation payment"}; !slices.Equal(got, w) {
		t.Fatalf("timeline rows %v, want %v", got, w)
	}
	ms := func(r int) (float64, float64) {
		base := float64(t0.UnixMilli())
		return tl.Rows[r].Start - base, tl.Rows[r].End - base
	}
	for i, w := range [][2]float64{{0, 13}, {13, 15}, {15, 20}, {30, 36}, {40, 90}} {
		if s, e := ms(i); s != w[0] || e != w[1] {
			t.Errorf("row %s: %v-%v ms, want %v-%v", got[i], s, e, w[0], w[1])
		}
	}
	if r := tl.Rows[2]; r.Segments[0].Kind != "failed" {
		t.Errorf("shipping's span is %q, want failed", r.Segments[0].Kind)
	}
	if r := tl.Rows[4]; len(r.Notes) != 1 || r.Notes[0] != "1 re-send (no ack in time)" {
		t.Errorf("payment's compensation notes %v, want its re-send", r.Notes)
	}

	// Inventory's answer came from its timer (a SLOW- sku): the span is
	// a wait on that timer.
	slow := inst
	slow.History = slices.Clone(inst.History)
	slow.History[2].Note = "emitted by timer slow-reserve"
	out = runApp(t, fx, "eval", "(() => { const r = timelineOf(view.topology, "+mustJSON(t, slow)+").rows[1]; return [r.step, r.segments[0].kind, r.segments[0].label, r.notes.join()]; })()")
	if out != `["inventory","timer","waiting on timer slow-reserve","waited on timer slow-reserve"]`+"\n" {
		t.Errorf("inventory's timeline, answered by its timer: %s", out)
	}

	out = runApp(t, fx, "eval", "timelineOf(view.topology, "+mustJSON(t, held)+").rows[1].segments.map((s) => s.kind)")
	if out != `["retrying","parked"]`+"\n" {
		t.Errorf("inventory's timeline, held by a dead letter: %s, want retrying then parked", out)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
