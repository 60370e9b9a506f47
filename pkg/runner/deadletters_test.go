package runner

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/topology"
	topologies "github.com/troupehq/troupe/topology"
)

// GET /api/deadletters: the outstanding dead letters of every step and of
// the coordinator, settled ones counted apart.
func TestDeadLettersAPI(t *testing.T) {
	ctx := t.Context()
	topo, err := topology.Parse("orders.yaml", topologies.Orders)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, step := range []string{"payment", "saga.order-fulfillment"} {
		if _, err := kadm.NewClient(cl).CreateTopics(ctx, 8, 1, nil, topo.DLQ(step), topo.RetryTopic(step)); err != nil {
			t.Fatal(err)
		}
	}
	write := func(step, key, typ string, p int32) {
		t.Helper()
		meta := event.New(typ, "client", key)
		in := &kgo.Record{Topic: "orders", Partition: p, Key: []byte(key), Value: []byte{0, 0, 0, 0, 1}, Headers: meta.Headers()}
		dl := dlq.NewDeadLetter(in, step, errors.New("it broke for "+key), 3, time.Now())
		dl.Topic = topo.DLQ(step)
		if err := cl.ProduceSync(ctx, dl).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write("payment", "o-1", "troupe.example.orders.OrderPlaced", 1)
	write("payment", "o-2", "troupe.example.orders.OrderPlaced", 2)
	write("saga.order-fulfillment", "o-3", "troupe.example.orders.OrderPlaced", 3)
	kcfg := kafka.Config{Brokers: c.ListenAddrs()}
	q, err := dlq.Open(ctx, kcfg, "payment", topo.DLQ("payment"), topo.RetryTopic("payment"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if n, err := q.Discard(ctx, dlq.At(2, 0), dlq.SendOptions{}); err != nil || n != 1 {
		t.Fatalf("discard: %d, %v", n, err)
	}

	srv := api.New(prometheus.NewRegistry(), zerolog.Nop())
	MountDeadLetters(srv, kcfg, topo)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/deadletters", nil))
	var got DeadLetters
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != 200 || err != nil {
		t.Fatalf("GET /api/deadletters: %d, %v\n%s", rec.Code, err, rec.Body)
	}
	by := map[string]StepDeadLetters{}
	for _, s := range got.Steps {
		by[s.Step] = s
		if s.Error != "" {
			t.Errorf("step %s: %s", s.Step, s.Error)
		}
	}
	if len(got.Steps) != 4 {
		t.Errorf("%d steps, want payment, inventory, shipping and the coordinator: %+v", len(got.Steps), got.Steps)
	}
	p := by["payment"]
	if p.Outstanding != 1 || p.Settled != 1 || len(p.Letters) != 1 || p.Letters[0].Key != "o-1" || p.Letters[0].Event != "OrderPlaced" ||
		p.Letters[0].Error != "it broke for o-1" || p.Command != "troupe dlq list --step payment" {
		t.Errorf("payment: %+v", p)
	}
	co := by["saga.order-fulfillment"]
	if co.Outstanding != 1 || co.Topic != "orders.saga.order-fulfillment.dlq" || len(co.Letters) != 1 || co.Letters[0].Key != "o-3" ||
		co.Letters[0].Partition != 3 || co.Command != "troupe dlq list --coordinator order-fulfillment" {
		t.Errorf("coordinator: %+v", co)
	}
	if in := by["inventory"]; in.Outstanding != 0 || in.Error != "" {
		t.Errorf("inventory (no DLQ topic yet): %+v", in)
	}
}
