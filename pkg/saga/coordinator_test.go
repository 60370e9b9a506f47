package saga_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step/steptest"
	"github.com/troupehq/troupe/pkg/topology"
)

// testTopology is the example saga with 2 partitions, a 1 s deadline and a
// compensation timeout of 300 ms with 2 attempts.
func testTopology(t *testing.T) *topology.Topology {
	t.Helper()
	b, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.NewReplacer("partitions: 8", "partitions: 2", "deadline: 30s", "deadline: 1s", "timeout: 10s", "timeout: 300ms").Replace(string(b))
	y = y[:strings.LastIndex(y, "attempts: 5")] + "attempts: 2\n" // the compensation policy's, last in the file
	topo, err := topology.Parse("orders-test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

type coordDriver struct {
	*steptest.Driver
	t     *testing.T
	topo  *topology.Topology
	store *saga.Store
	reg   *prometheus.Registry
}

func startCoordinator(t *testing.T) *coordDriver {
	t.Helper()
	return startCoordinatorOf(t, testTopology(t))
}

func startCoordinatorOf(t *testing.T, topo *topology.Topology) *coordDriver {
	t.Helper()
	serde := avro.NewSerde(steptest.NewRegistry())
	if err := orders.Register(serde); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := saga.NewCoordinator(topo, serde, reg)
	d, err := steptest.Start(c.Step(), serde, steptest.Partitions(topo.Partitions), steptest.Topics(topo.EndedTopic()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return &coordDriver{Driver: d, t: t, topo: topo, store: saga.NewStore(d.Runtime(), topo), reg: reg}
}

// send produces events of instance id, by short name, with their fields
// from the id alone.
func (d *coordDriver) send(id string, types ...string) {
	d.t.Helper()
	for _, typ := range types {
		full := d.topo.FullName(typ)
		topic, _ := d.topo.TopicOf(full)
		v := orders.Types()[full]
		b, _ := json.Marshal(map[string]string{"orderId": id})
		p := reflectNew(v)
		if err := json.Unmarshal(b, p); err != nil {
			d.t.Fatal(err)
		}
		if _, err := d.Send(topic, id, p); err != nil {
			d.t.Fatal(err)
		}
	}
}

// expect reads the next event on topic and checks its type (short name)
// and key.
func (d *coordDriver) expect(topic, id, typ string) steptest.Output {
	d.t.Helper()
	out, err := d.Next(topic)
	if err != nil {
		d.t.Fatalf("waiting for %s of %s on %s: %v", typ, id, topic, err)
	}
	if got := d.topo.ShortName(out.Meta.Type); got != typ || out.Key != id {
		d.t.Fatalf("on %s: %s of %q, want %s of %q", topic, got, out.Key, typ, id)
	}
	return out
}

func (d *coordDriver) instance(id string, want saga.Status) *saga.Instance {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		inst, err := d.store.Instance(d.t.Context(), id)
		if err == nil && inst.Status == want {
			return inst
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("instance %s: %+v, %v; want status %s", id, inst, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCoordinatorCompensatesInReverseOrder(t *testing.T) {
	d := startCoordinator(t)
	d.send("o-xx", "OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ShipmentFailed")
	cmd := d.expect("compensations", "o-xx", "ReleaseInventory")
	if r := cmd.Value.(orders.ReleaseInventory); r.Reason != "ShipmentFailed" || r.OrderID != "o-xx" {
		t.Errorf("command %+v: want the order id and the reason", r)
	}
	d.send("o-xx", "InventoryReleased")
	d.expect("compensations", "o-xx", "RefundPayment")
	d.send("o-xx", "PaymentRefunded")
	end := d.expect(d.topo.EndedTopic(), "o-xx", "troupe.saga.SagaEnded").Value.(saga.Ended)
	if end.Status != "COMPENSATED" || end.Reason != "ShipmentFailed" || end.Saga != d.topo.Saga {
		t.Errorf("SagaEnded %+v", end)
	}
	inst := d.instance("o-xx", saga.Compensated)
	if !slices.Equal(inst.Compensated, []string{"inventory", "payment"}) || !slices.Equal(inst.Completed, []string{"payment", "inventory"}) {
		t.Errorf("instance %+v", inst)
	}
}

// The deadline is a durable timer; a compensation not acked in time is
// sent again, and the instance fails after the policy's attempts.
func TestCoordinatorTimeoutAndFailure(t *testing.T) {
	d := startCoordinator(t)
	d.send("o-slow", "OrderPlaced", "PaymentAuthorized")
	d.send("o-done", "OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ShipmentScheduled")
	d.expect(d.topo.EndedTopic(), "o-done", "troupe.saga.SagaEnded")
	start := time.Now()
	d.expect("compensations", "o-slow", "RefundPayment")
	d.expect("compensations", "o-slow", "RefundPayment") // no ack within 300 ms
	end := d.expect(d.topo.EndedTopic(), "o-slow", "troupe.saga.SagaEnded").Value.(saga.Ended)
	if end.Status != "FAILED" || end.Reason != "timeout" {
		t.Errorf("SagaEnded %+v, want FAILED timeout", end)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("deadline and two attempts took %s", took)
	}
	inst := d.instance("o-slow", saga.Failed)
	if !strings.Contains(inst.Error, "payment") || len(inst.Compensated) != 0 {
		t.Errorf("instance %+v", inst)
	}
	d.instance("o-done", saga.Completed)

	// The late ack changes nothing but the history.
	d.send("o-slow", "PaymentRefunded")
	if err := d.Runtime().WaitCommit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if inst := d.instance("o-slow", saga.Failed); !strings.Contains(inst.History[len(inst.History)-1].Note, "after the saga ended") &&
		!slices.Contains(inst.Compensated, "payment") {
		t.Errorf("late ack: %+v", inst.History[len(inst.History)-1])
	}
}

// The API over a coordinator's store: one instance, a filtered page, and
// stats over every partition.
func TestCoordinatorAPI(t *testing.T) {
	d := startCoordinator(t)
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		d.send(id, "OrderPlaced", "PaymentDeclined")
	}
	d.send("z", "OrderPlaced")
	for _, id := range ids {
		d.instance(id, saga.Compensated)
	}
	d.instance("z", saga.Running)
	srv := api.New(d.reg, zerolog.Nop())
	saga.Mount(srv, d.store, nil)
	if err := d.reg.Register(d.store.Collector()); err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	get := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil {
			_ = json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	var st saga.Stats
	if code := get("/api/sagas/stats", &st); code != 200 || st.ByStatus[saga.Compensated] != 5 || st.ByStatus[saga.Running] != 1 || len(st.Partitions) != 2 {
		t.Errorf("stats: %d %+v", code, st)
	}
	var inst saga.Instance
	if code := get("/api/sagas/c", &inst); code != 200 || inst.Reason != "PaymentDeclined" || len(inst.History) != 2 {
		t.Errorf("instance: %d %+v", code, inst)
	}
	if code := get("/api/sagas/nope", nil); code != 404 {
		t.Errorf("unknown instance: %d, want 404", code)
	}
	var got []string
	cursor := ""
	for range 10 {
		var page saga.Page
		if code := get("/api/sagas?status=COMPENSATED&limit=2&cursor="+cursor, &page); code != 200 {
			t.Fatalf("list: %d", code)
		}
		for _, it := range page.Items {
			got = append(got, it.ID)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, ids) {
		t.Errorf("paged list of COMPENSATED: %v, want %v", got, ids)
	}
	if code := get("/api/sagas?cursor=not-a-cursor!", nil); code != 400 {
		t.Errorf("bad cursor: %d, want 400", code)
	}
	mfs, _ := d.reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "troupe_saga_instances" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "status" && l.GetValue() == "COMPENSATED" && m.GetGauge().GetValue() == 5 {
						found = true
					}
				}
			}
		}
	}
	if !found {
		t.Error("troupe_saga_instances{status=COMPENSATED} is not 5")
	}
}

func reflectNew(v any) any { return reflect.New(reflect.TypeOf(v)).Interface() }

// Dead letters of the saga's steps, and their replays and discards, are in
// the instance's history and its outstanding deadLetters; events coming
// back from a park and dead letters of unknown instances change nothing.
func TestCoordinatorRecordsDeadLetters(t *testing.T) {
	d := startCoordinator(t)
	d.send("o-dl", "OrderPlaced", "PaymentAuthorized")
	d.instance("o-dl", saga.Running)
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.Brokers()...), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(r *kgo.Record) *kgo.Record {
		t.Helper()
		res, err := cl.ProduceSync(t.Context(), r).First()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	deadLetter := func(id string) dlq.DeadLetter {
		t.Helper()
		m := event.New(d.topo.FullName("PaymentAuthorized"), "test", id)
		in := &kgo.Record{Topic: "payments", Partition: -1, Offset: 9, Key: []byte(id), Value: []byte("v"), Headers: m.Headers()}
		r := dlq.NewDeadLetter(in, "inventory", errors.New("warehouse down"), 3, time.Now())
		r.Topic = d.topo.DLQ("inventory")
		dl, err := dlq.Parse(produce(r))
		if err != nil {
			t.Fatal(err)
		}
		return dl
	}
	wait := func(id string, ok func(*saga.Instance) bool) *saga.Instance {
		t.Helper()
		var inst *saga.Instance
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if inst, err = d.store.Instance(t.Context(), id); err == nil && ok(inst) {
				return inst
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("instance %s: %+v, %v", id, inst, err)
		return nil
	}
	// The test saga's deadline is 1 s: it times out and compensates on the
	// way, which changes nothing of its dead letters.
	recoveries := func(inst *saga.Instance) []saga.Entry {
		return slices.DeleteFunc(slices.Clone(inst.History), func(e saga.Entry) bool { return !strings.HasPrefix(e.Type, saga.EntryDeadLetter) })
	}
	last := func(inst *saga.Instance) saga.Entry { r := recoveries(inst); return r[len(r)-1] }

	first := deadLetter("o-dl")
	inst := wait("o-dl", func(i *saga.Instance) bool { return len(i.DeadLetters) == 1 })
	dl := inst.DeadLetters[0]
	if dl.Step != "inventory" || dl.Event != "PaymentAuthorized" || dl.Attempts != 3 || dl.Offset != first.At().Offset || inst.Status != saga.Running {
		t.Errorf("dead letter %+v of %s instance", dl, inst.Status)
	}
	if e := last(inst); e.Type != saga.EntryDeadLetter || !strings.Contains(e.Note, "PaymentAuthorized failed after 3 attempts: warehouse down") {
		t.Errorf("history entry %+v", e)
	}

	retry := d.topo.RetryTopic("inventory")
	produce(dlq.Replay(first, retry))
	inst = wait("o-dl", func(i *saga.Instance) bool { return len(i.DeadLetters) == 0 })
	if e := last(inst); e.Type != saga.EntryReplayed || e.Step != "inventory" {
		t.Errorf("after replay: history entry %+v", e)
	}

	// The replay failed again: a second dead letter, then discarded. An
	// event unparked meanwhile is no replay.
	second := deadLetter("o-dl")
	wait("o-dl", func(i *saga.Instance) bool { return len(i.DeadLetters) == 1 })
	unparked := dlq.Replay(first, retry)
	unparked.Headers = append(unparked.Headers, kgo.RecordHeader{Key: dlq.HeaderUnparked, Value: []byte("1")})
	produce(unparked)
	produce(dlq.Discard(second, retry))
	inst = wait("o-dl", func(i *saga.Instance) bool { return len(i.DeadLetters) == 0 })
	var kinds []string
	for _, e := range recoveries(inst) {
		kinds = append(kinds, e.Type)
	}
	want := []string{saga.EntryDeadLetter, saga.EntryReplayed, saga.EntryDeadLetter, saga.EntryDiscarded}
	if !slices.Equal(kinds, want) {
		t.Errorf("history %v, want %v", kinds, want)
	}

	// A dead letter of an instance the coordinator never saw starts nothing.
	deadLetter("o-unknown")
	d.send("o-after", "OrderPlaced")
	d.instance("o-after", saga.Running)
	if _, err := d.store.Instance(t.Context(), "o-unknown"); err == nil {
		t.Error("a dead letter started an instance")
	}
}

// With a retention, an ended instance is deleted that long after its end;
// a running one is kept.
func TestCoordinatorForgetsEndedInstances(t *testing.T) {
	topo := testTopology(t)
	topo.Deadline = time.Minute
	topo.Retention = time.Second
	d := startCoordinatorOf(t, topo)
	d.send("gone", "OrderPlaced", "PaymentDeclined")
	d.send("kept", "OrderPlaced")
	d.instance("gone", saga.Compensated)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := d.store.Instance(t.Context(), "gone")
		if errors.Is(err, saga.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ended instance still there 15 s after its end with a 1 s retention: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.instance("kept", saga.Running)
	st, err := d.store.Stats(t.Context())
	if err != nil || st.ByStatus[saga.Compensated] != 0 || st.ByStatus[saga.Running] != 1 {
		t.Errorf("stats %+v %v, want 1 RUNNING and no COMPENSATED", st, err)
	}
}
