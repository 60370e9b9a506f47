package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
)

// A PaymentAuthorized of an order never placed and a lone
// ShipmentScheduled, on the real broker with every step and the
// coordinator as `troupe run` processes: neither makes a saga (none
// COMPLETED, no SagaEnded, not even past the deadline), both are in the
// orphan view (API and `troupe saga orphans`) with their topic, offset and
// producer, the steps do not act on them (no reservation, no shipment),
// and an order placed meanwhile completes as usual.
func TestSagaOrphans(t *testing.T) {
	e := newSagaEnv(t, "3s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	inventory := e.procs[1]
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	ctx := context.Background()

	sent := time.Now()
	e.produceEvent(ctx, "orph-pay", orders.PaymentAuthorized{OrderID: "orph-pay", PaymentID: "forged", AmountCents: 100,
		Items: []orders.LineItem{{SKU: "BOOK-1", Quantity: 1}}, ShipTo: orders.Address{Name: "X", Line1: "1 Road", City: "Oslo", Country: "NO"}})
	e.produceEvent(ctx, "orph-ship", orders.ShipmentScheduled{OrderID: "orph-ship", TrackingID: "forged"})
	real := map[string]orders.Outcome{"orph-real": orders.OutcomeCompleted}
	e.placeOrders(ctx, real)
	checkEnds(t, real, e.waitEnded(coord.http, real, 60*time.Second), nil)

	topicOf := func(short string) string { tp, _ := e.topo.TopicOf(e.topo.FullName(short)); return tp }
	var page saga.OrphanPage
	eventually(t, 30*time.Second, "both orphans listed", func() (bool, string) {
		page = saga.OrphanPage{}
		code := apiGet(t, coord.http, "/api/orphans?limit=1000", &page)
		ids := map[string]bool{}
		for _, o := range page.Items {
			ids[o.ID] = true
		}
		return code == 200 && ids["orph-pay"] && ids["orph-ship"], fmt.Sprintf("HTTP %d, %+v", code, page.Items)
	})
	found := map[string]bool{}
	for _, o := range page.Items {
		switch {
		case o.ID == "orph-real":
			t.Errorf("orphan of the placed order: %+v", o)
		case o.ID == "orph-pay" && o.Type == "PaymentAuthorized", o.ID == "orph-ship" && o.Type == "ShipmentScheduled":
			found[o.ID] = true
			if o.Topic != topicOf(o.Type) || o.Source != "integration-test" || o.Offset < 0 || o.Time.IsZero() {
				t.Errorf("orphan %+v: want topic %s, source integration-test, its offset and time", o, topicOf(o.Type))
			}
		}
	}
	if !found["orph-pay"] || !found["orph-ship"] {
		t.Errorf("orphans %+v: want orph-pay's PaymentAuthorized and orph-ship's ShipmentScheduled", page.Items)
	}

	// Past the deadline, what would have ended a saga the orphans started
	// (absence needs the wait).
	time.Sleep(time.Until(sent.Add(3*time.Second + 3*time.Second)))
	var st saga.Stats
	if code := apiGet(t, coord.http, "/api/sagas/stats", &st); code != 200 || st.ByStatus[saga.Completed] != 1 || st.Orphans < 2 {
		t.Errorf("stats: HTTP %d %+v; want the one placed order COMPLETED and at least 2 orphans", code, st)
	}
	for _, id := range []string{"orph-pay", "orph-ship"} {
		if code := apiGet(t, coord.http, "/api/sagas/"+id, nil); code != http.StatusNotFound {
			t.Errorf("GET /api/sagas/%s: HTTP %d, want 404 (no saga)", id, code)
		}
	}
	var ended []string
	for _, r := range e.readTopic(ctx, e.topo.EndedTopic()) {
		ended = append(ended, string(r.Key))
	}
	if !slices.Equal(ended, []string{"orph-real"}) {
		t.Errorf("SagaEnded for %v, want orph-real's alone", ended)
	}
	for _, typ := range []string{"PaymentAuthorized", "ShipmentScheduled"} {
		if n := metric(t, coord.http, "troupe_saga_orphans_total", "type", typ); n < 1 {
			t.Errorf("troupe_saga_orphans_total{type=%s} = %v, want at least 1", typ, n)
		}
	}
	out, err := runTroupe(t, ctx, "saga", "orphans", "--api", coord.http)
	if err != nil || !strings.Contains(out, "orph-pay") || !strings.Contains(out, topicOf("ShipmentScheduled")+"/") {
		t.Errorf("troupe saga orphans: %v\n%s", err, out)
	}
	out, err = runTroupe(t, ctx, "saga", "get", "orph-pay", "--api", coord.http)
	if err == nil || !strings.Contains(out, "orphans") {
		t.Errorf("troupe saga get orph-pay: %v, want an error that names the orphans\n%s", err, out)
	}
	// The steps refuse events that no step of the saga emitted: the forged
	// PaymentAuthorized reserves nothing and ships nothing.
	if c := e.chains(ctx, 5*time.Second, func(map[string][]string) bool { return false })["orph-pay"]; slices.Contains(c, "InventoryReserved") || slices.Contains(c, "ShipmentScheduled") {
		t.Errorf("orph-pay's events: %v; the steps acted on a PaymentAuthorized that no payment step emitted", c)
	}
	if n := metric(t, inventory.http, "troupe_step_events_total", "outcome", "orphan"); n != 1 {
		t.Errorf("inventory counted %v orphans, want 1 (the forged PaymentAuthorized)", n)
	}
}
