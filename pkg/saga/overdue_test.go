package saga_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/topology"
)

// troupe_saga_overdue_instances counts the instances not ended although
// their deadline and their compensation's longest time have passed since
// their trigger's time; ended ones and those within it are not.
func TestOverdueInstances(t *testing.T) {
	b, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// A 1 h deadline; two steps compensate, 5 attempts of 10 s each: a
	// budget of 1 h 1 min 40 s.
	topo, err := topology.Parse("orders-overdue.yaml", []byte(strings.NewReplacer("partitions: 8", "partitions: 2", "deadline: 30s", "deadline: 1h").Replace(string(b))))
	if err != nil {
		t.Fatal(err)
	}
	d := startCoordinatorOf(t, topo)
	old := func(id string, ago time.Duration) {
		m := event.New("", "steptest", id)
		m.Time = time.Now().Add(-ago)
		d.sendAs(id, "OrderPlaced", m)
	}
	old("stuck", 2*time.Hour)
	old("within", time.Hour)
	old("ended", 2*time.Hour)
	d.send("ended", "PaymentDeclined")
	d.instance("stuck", saga.Running)
	d.instance("within", saga.Running)
	d.instance("ended", saga.Compensated)
	if err := d.reg.Register(d.store.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "troupe_saga_overdue_instances" {
			got = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if got != 1 {
		t.Fatalf("troupe_saga_overdue_instances = %v, want 1 (the instance started 2 h ago and still running)", got)
	}
}
