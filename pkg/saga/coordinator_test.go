package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/replay"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step"
	"github.com/troupehq/troupe/pkg/step/steptest"
	"github.com/troupehq/troupe/pkg/topology"
)

// testTopology is the example saga with 2 partitions, a 1 s deadline and a
// compensation timeout of 300 ms with 2 attempts.
// compensationTimeout is the tests' compensation timeout: longer than a
// test consumer can take to see a command (its fetch waits up to 500 ms),
// so that an ack sent on seeing one is not raced by the re-send.
const compensationTimeout = 2 * time.Second

func testTopology(t *testing.T) *topology.Topology {
	t.Helper()
	b, err := os.ReadFile("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.NewReplacer("partitions: 8", "partitions: 2", "deadline: 30s", "deadline: 1s", "timeout: 10s", "timeout: "+compensationTimeout.String()).Replace(string(b))
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
	serde *avro.Serde
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
	return &coordDriver{Driver: d, t: t, topo: topo, store: saga.NewStore(d.Runtime(), topo), reg: reg, serde: serde}
}

// send produces events of instance id, by short name, with their fields
// from the id alone and the ce_source of the step that emits them (as the
// saga's own steps write it).
func (d *coordDriver) send(id string, types ...string) {
	d.t.Helper()
	for _, typ := range types {
		full := d.topo.FullName(typ)
		source := "steptest"
		for _, s := range d.topo.Steps {
			if full != d.topo.Trigger && slices.Contains(s.Emits, full) || s.Compensation.Ack == full {
				source = d.topo.Group(s.Name)
			}
		}
		d.sendAs(id, typ, event.New("", source, id))
	}
}

// sendAs produces an event of instance id (short type name) with the
// metadata m, as a step or another producer would, and returns m.
func (d *coordDriver) sendAs(id, typ string, m event.Metadata) event.Metadata {
	d.t.Helper()
	full := d.topo.FullName(typ)
	topic, _ := d.topo.TopicOf(full)
	p := reflectNew(orders.Types()[full])
	b, _ := json.Marshal(map[string]string{"orderId": id})
	if err := json.Unmarshal(b, p); err != nil {
		d.t.Fatal(err)
	}
	v, err := d.serde.Encode(d.t.Context(), topic, p)
	if err != nil {
		d.t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.Brokers()...))
	if err != nil {
		d.t.Fatal(err)
	}
	defer cl.Close()
	m.Type = full
	if err := cl.ProduceSync(d.t.Context(), &kgo.Record{Topic: topic, Key: []byte(id), Value: v, Headers: m.Headers()}).FirstErr(); err != nil {
		d.t.Fatal(err)
	}
	return m
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
	first := d.expect("compensations", "o-slow", "RefundPayment")
	again := d.expect("compensations", "o-slow", "RefundPayment") // no ack within the timeout
	end := d.expect(d.topo.EndedTopic(), "o-slow", "troupe.saga.SagaEnded").Value.(saga.Ended)
	if end.Status != "FAILED" || end.Reason != "timeout" {
		t.Errorf("SagaEnded %+v, want FAILED timeout", end)
	}
	// Sent again on the timeout, not before (the times the coordinator
	// stamped on them, not when this test happened to read them).
	if gap := again.Meta.Time.Sub(first.Meta.Time); gap < compensationTimeout {
		t.Errorf("RefundPayment sent again %s after the first, before the compensation timeout %s", gap, compensationTimeout)
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
	// r's events are read in another order than they happened (as when
	// their topics are read in no set order).
	t0 := time.Now().Add(-time.Minute)
	for i, ev := range []struct {
		typ string
		at  time.Duration
	}{{"OrderPlaced", 0}, {"InventoryReserved", 2 * time.Second}, {"PaymentAuthorized", time.Second}} {
		m := event.New("", "steptest", "r")
		if i > 0 {
			m.Source = d.topo.Group(map[string]string{"InventoryReserved": "inventory", "PaymentAuthorized": "payment"}[ev.typ])
		}
		m.Time = t0.Add(ev.at)
		d.sendAs("r", ev.typ, m)
		for wait := time.Now().Add(10 * time.Second); i == 1; time.Sleep(20 * time.Millisecond) {
			if inst, err := d.store.Instance(t.Context(), "r"); err == nil && len(inst.History) == 2 {
				break
			}
			if time.Now().After(wait) {
				t.Fatal("r's InventoryReserved not recorded after 10 s")
			}
		}
	}
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
	if code := get("/api/sagas/stats", &st); code != 200 || st.ByStatus[saga.Compensated] != 5 || st.ByStatus[saga.Running] != 2 || len(st.Partitions) != 2 {
		t.Errorf("stats: %d %+v", code, st)
	}
	var inst saga.Instance
	if code := get("/api/sagas/c", &inst); code != 200 || inst.Reason != "PaymentDeclined" || len(inst.History) != 2 {
		t.Errorf("instance: %d %+v", code, inst)
	}
	var r saga.Instance
	deadline := time.Now().Add(30 * time.Second)
	for get("/api/sagas/r", &r) != 200 || len(r.History) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("instance r has %d history entries after 30 s, want 3", len(r.History))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := r.History; h[0].Type != "OrderPlaced" || h[1].Type != "PaymentAuthorized" || h[2].Type != "InventoryReserved" {
		t.Errorf("history of r not in the order its events happened: %+v", h)
	}
	var page saga.Page
	if code := get("/api/sagas?reason=paymentdeclined&id=c", &page); code != 200 || len(page.Items) != 1 || page.Items[0].ID != "c" {
		t.Errorf("reason PaymentDeclined and id containing c: %d %+v", code, page.Items)
	}
	if code := get("/api/sagas?reason=OutOfStock", &page); code != 200 || len(page.Items) != 0 {
		t.Errorf("reason OutOfStock: %d %+v, want none", code, page.Items)
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
	// Newest first: they were placed in the order of ids.
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("paged list of COMPENSATED: %v, want %v (newest first)", got, want)
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
	if e := last(inst); e.Type != saga.EntryDeadLetter || e.Topic != d.topo.DLQ("inventory") || !strings.Contains(e.Note, "PaymentAuthorized failed after 3 attempts: warehouse down") {
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

// counter is the value of troupe_saga_orphans_total{type=typ}.
func (d *coordDriver) orphansCounted(typ string) float64 {
	d.t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "troupe_saga_orphans_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A lone PaymentAuthorized and a lone ShipmentScheduled (no order ever
// placed) start no saga: no instance, no SagaEnded, nothing in the stats
// but the orphans, which the API lists with where they came from.
func TestCoordinatorKeepsOrphans(t *testing.T) {
	d := startCoordinator(t)
	pay := d.sendAs("o-lone-pay", "PaymentAuthorized", event.New("", "forger", "o-lone-pay"))
	d.sendAs("o-lone-ship", "ShipmentScheduled", event.New("", "forger", "o-lone-ship"))
	d.send("o-real", "OrderPlaced", "PaymentDeclined")
	d.instance("o-real", saga.Compensated)
	// The ended topic has o-real's SagaEnded and nothing before it.
	d.expect(d.topo.EndedTopic(), "o-real", "troupe.saga.SagaEnded")

	srv := api.New(d.reg, zerolog.Nop())
	saga.Mount(srv, d.store, nil)
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	get := func(path string, v any) (int, string) {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if v != nil {
			_ = json.Unmarshal(body, v)
		}
		return resp.StatusCode, string(body)
	}
	var st saga.Stats
	if code, body := get("/api/sagas/stats", &st); code != 200 || st.Orphans != 2 || st.ByStatus[saga.Completed] != 0 || st.ByStatus[saga.Running] != 0 || st.ByStatus[saga.Compensated] != 1 {
		t.Errorf("stats: %d %s; want 2 orphans, 1 COMPENSATED and nothing else", code, body)
	}
	for _, id := range []string{"o-lone-pay", "o-lone-ship"} {
		if code, body := get("/api/sagas/"+id, nil); code != 404 || !strings.Contains(body, "orphans") || !strings.Contains(body, "OrderPlaced") {
			t.Errorf("GET /api/sagas/%s: %d %s; want 404 naming the orphans and the missing trigger", id, code, body)
		}
	}
	var page saga.Page
	if code, _ := get("/api/sagas", &page); code != 200 || len(page.Items) != 1 || page.Items[0].ID != "o-real" {
		t.Errorf("list: %d %+v; want o-real alone", code, page.Items)
	}
	// Two pages of one orphan each, then the end.
	var got []saga.Orphan
	cursor := ""
	for range 4 {
		var op saga.OrphanPage
		if code, body := get("/api/orphans?limit=1&cursor="+cursor, &op); code != 200 || len(op.Items) != 1 {
			t.Fatalf("orphans page: %d %s", code, body)
		}
		got = append(got, op.Items...)
		if cursor = op.Next; cursor == "" {
			break
		}
	}
	slices.SortFunc(got, func(a, b saga.Orphan) int { return strings.Compare(a.ID, b.ID) })
	if len(got) != 2 || got[0].ID != "o-lone-pay" || got[0].Type != "PaymentAuthorized" || got[0].Topic != "payments" ||
		got[0].Source != "forger" || got[0].EventID != pay.ID || got[0].Offset < 0 || got[1].ID != "o-lone-ship" || got[1].Type != "ShipmentScheduled" || got[1].Topic != "shipping" {
		t.Errorf("orphans %+v", got)
	}
	if code, _ := get("/api/orphans?cursor=bad!", nil); code != 400 {
		t.Errorf("bad orphan cursor: %d, want 400", code)
	}
	for typ, want := range map[string]float64{"PaymentAuthorized": 1, "ShipmentScheduled": 1, "InventoryReserved": 0} {
		if n := d.orphansCounted(typ); n != want {
			t.Errorf("troupe_saga_orphans_total{type=%s} = %v, want %v", typ, n, want)
		}
	}
	// Nothing ends for an orphan, not even past the test saga's 1 s
	// deadline (what would end a saga started by one): absence needs the
	// wait. The next SagaEnded is the next real saga's.
	time.Sleep(1500 * time.Millisecond)
	d.send("o-last", "OrderPlaced", "PaymentDeclined")
	d.expect(d.topo.EndedTopic(), "o-last", "troupe.saga.SagaEnded")
}

// A trigger read after events it caused (another topic, read first)
// adopts them: the saga completes, its history says what was read early,
// and the orphans are gone. An orphan it did not cause stays an orphan and
// does not complete the saga.
func TestCoordinatorAdoptsOrphansOfALateTrigger(t *testing.T) {
	d := startCoordinator(t)
	placed := event.New("", "test", "o-late")
	step := func(source string, cause event.Metadata) event.Metadata {
		m := event.New("", source, "o-late")
		m.CausationID = cause.ID
		return m
	}
	pay := d.sendAs("o-late", "PaymentAuthorized", step("orders.payment", placed))
	inv := d.sendAs("o-late", "InventoryReserved", step("orders.inventory", pay))
	d.sendAs("o-late", "ShipmentScheduled", step("orders.shipping", inv))
	d.sendAs("o-forged", "ShipmentScheduled", event.New("", "forger", "o-forged"))
	// Both are orphans before their trigger.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := d.store.Stats(t.Context())
		if err == nil && st.Orphans == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, %v: want 4 orphans before any trigger", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := d.store.Instance(t.Context(), "o-late"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("o-late before its trigger: %v, want ErrNotFound", err)
	}
	d.sendAs("o-late", "OrderPlaced", placed)
	d.send("o-forged", "OrderPlaced")
	end := d.expect(d.topo.EndedTopic(), "o-late", "troupe.saga.SagaEnded").Value.(saga.Ended)
	if end.Status != "COMPLETED" {
		t.Errorf("SagaEnded %+v, want COMPLETED", end)
	}
	inst := d.instance("o-late", saga.Completed)
	var types []string
	for _, e := range inst.History {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{"OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ShipmentScheduled"}) ||
		!strings.Contains(inst.History[1].Note, "read before OrderPlaced") || len(inst.Orphans) != 0 {
		t.Errorf("o-late: history %v (note %q), orphans %+v", types, inst.History[1].Note, inst.Orphans)
	}
	if inst.History[1].Topic != "payments" || inst.History[0].Topic != "orders" {
		t.Errorf("history entries name topics %q, %q; want orders, payments", inst.History[0].Topic, inst.History[1].Topic)
	}
	forged := d.instance("o-forged", saga.Running)
	if len(forged.Orphans) != 1 || forged.Orphans[0].Type != "ShipmentScheduled" || slices.Contains(forged.Completed, "shipping") {
		t.Errorf("o-forged: %+v; want RUNNING with its ShipmentScheduled an orphan", forged)
	}
	// Another forged one, now that the saga runs, is not applied either;
	// the saga times out (1 s deadline) with nothing to undo.
	d.sendAs("o-forged", "ShipmentScheduled", event.New("", "forger", "o-forged"))
	if end := d.expect(d.topo.EndedTopic(), "o-forged", "troupe.saga.SagaEnded").Value.(saga.Ended); end.Status != "COMPENSATED" || end.Reason != "timeout" {
		t.Errorf("o-forged SagaEnded %+v, want COMPENSATED timeout", end)
	}
	eventually(t, "the second forgery recorded", func() (bool, string) {
		inst, err := d.store.Instance(t.Context(), "o-forged")
		if err != nil {
			return false, err.Error()
		}
		for _, e := range inst.History {
			if e.Type == "ShipmentScheduled" && strings.Contains(e.Note, `not applied: its ce_source "forger"`) {
				return len(inst.Orphans) == 2 && !slices.Contains(inst.Completed, "shipping"), fmt.Sprintf("%+v", inst)
			}
		}
		return false, fmt.Sprintf("history %+v", inst.History)
	})
}

// The orphans of an id whose trigger does not come within the orphan
// window are forgotten: store and stats. The trigger coming later starts a
// saga of its own, with nothing to adopt.
func TestCoordinatorForgetsOrphansAfterTheWindow(t *testing.T) {
	defer saga.SetOrphanWindow(500 * time.Millisecond)()
	d := startCoordinator(t)
	d.sendAs("o-gone", "ShipmentScheduled", event.New("", "forger", "o-gone"))
	eventually(t, "the orphan kept", func() (bool, string) {
		st, err := d.store.Stats(t.Context())
		return err == nil && st.Orphans == 1, fmt.Sprintf("%+v %v", st, err)
	})
	eventually(t, "the orphan forgotten", func() (bool, string) {
		st, err := d.store.Stats(t.Context())
		_, kept, rerr := d.Runtime().ReadInstance(d.store.Partition("o-gone"), "o-gone")
		return err == nil && st.Orphans == 0 && rerr == nil && !kept, fmt.Sprintf("%+v %v; state kept %v %v", st, err, kept, rerr)
	})
	d.send("o-gone", "OrderPlaced")
	if inst := d.instance("o-gone", saga.Running); len(inst.History) != 1 || len(inst.Orphans) != 0 {
		t.Errorf("o-gone after its orphan was forgotten: %+v", inst)
	}
}

// TestCoordinatorTraceID: an instance has the trace of its trigger: the
// trigger's traceparent's, or, traced, the trace its call span is in (for
// an untraced trigger, the one derived from the saga id, which the steps
// use too); the API's JSON names it.
func TestCoordinatorTraceID(t *testing.T) {
	for _, traced := range []bool{false, true} {
		t.Run(fmt.Sprintf("traced=%v", traced), func(t *testing.T) {
			topo := testTopology(t)
			serde := avro.NewSerde(steptest.NewRegistry())
			if err := orders.Register(serde); err != nil {
				t.Fatal(err)
			}
			exp := tracetest.NewInMemoryExporter()
			opts := []steptest.Option{steptest.Partitions(topo.Partitions), steptest.Topics(topo.EndedTopic())}
			if traced {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
				t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts = append(opts, steptest.Tracing(tp))
			}
			c := saga.NewCoordinator(topo, serde, nil)
			dr, err := steptest.Start(c.Step(), serde, opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dr.Close() })
			d := &coordDriver{Driver: dr, t: t, topo: topo, store: saga.NewStore(dr.Runtime(), topo), serde: serde}

			const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
			m := event.New("", "steptest", "with")
			m.TraceParent = "00-" + tid + "-00f067aa0ba902b7-01"
			d.sendAs("with", "OrderPlaced", m)
			d.send("without", "OrderPlaced")
			want := map[string]string{"with": tid, "without": ""}
			if traced {
				want["without"] = step.SagaSpanContext("without").TraceID().String()
			}
			for id, w := range want {
				if got := d.instance(id, saga.Running).TraceID; got != w {
					t.Errorf("instance %s: trace id %q, want %q", id, got, w)
				}
			}
			b, _ := json.Marshal(d.instance("with", saga.Running))
			if !strings.Contains(string(b), `"traceId":"`+tid+`"`) {
				t.Errorf("instance JSON %s has no traceId %s", b, tid)
			}
			if traced {
				found := false
				for _, s := range exp.GetSpans() {
					found = found || s.Name == topo.App+".saga."+topo.Saga+" process OrderPlaced" && s.SpanContext.TraceID().String() == tid
				}
				if !found {
					t.Errorf("no span of the coordinator's call for the trigger in trace %s", tid)
				}
			}
		})
	}
}
