package topology

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestPlanAndApply(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	topo, err := Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	specs := topo.TopicSpecs()
	plan, err := MakePlan(ctx, cl, specs)
	if err != nil {
		t.Fatal(err)
	}
	if n := plan.Counts()[ActionCreate]; n != len(specs) {
		t.Fatalf("empty cluster: %d to create, want %d", n, len(specs))
	}
	created, err := plan.Apply(ctx, cl)
	if err != nil || len(created) != len(specs) {
		t.Fatalf("apply: %v, created %d", err, len(created))
	}
	plan, err = MakePlan(ctx, cl, specs)
	if err != nil {
		t.Fatal(err)
	}
	if n := plan.Counts()[ActionOK]; n != len(specs) || plan.Err() != nil {
		t.Fatalf("after apply: %d ok of %d, err %v: %+v", n, len(specs), plan.Err(), plan.Counts())
	}
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, "orders.payment.changelog")
	if err != nil || len(details["orders.payment.changelog"].Partitions) != 8 {
		t.Fatalf("changelog partitions: %v", err)
	}

	// A topology that wants a different partition count is refused with a
	// migration hint, and nothing is created.
	other := *topo
	other.Partitions = 4
	other.Topics = append([]Topic{{Name: "extra"}}, topo.Topics...)
	plan, err = MakePlan(ctx, cl, other.TopicSpecs())
	if err != nil {
		t.Fatal(err)
	}
	perr := plan.Err()
	if perr == nil || !strings.Contains(perr.Error(), "topic orders has 8 partitions, the topology wants 4") || !strings.Contains(perr.Error(), "co-partitioning") {
		t.Fatalf("mismatch not reported: %v", perr)
	}
	if _, err := plan.Apply(ctx, cl); err == nil {
		t.Fatal("apply went ahead despite a mismatch")
	}
	if d, _ := adm.ListTopics(ctx, "extra"); len(d["extra"].Partitions) != 0 {
		t.Fatal("apply created a topic despite a mismatch")
	}
}
