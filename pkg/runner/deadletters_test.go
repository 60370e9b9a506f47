package runner

import (
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
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
	MountDeadLetters(srv, kcfg, topo, zerolog.Nop())
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

// POST /api/deadletters/{step}/{partition}/{offset}/replay|discard does
// what troupe dlq replay|discard does: a dry run writes nothing, a replay
// writes the event to the step's retry topic, once; a server reachable from
// other machines, or a request from another site, is refused.
func TestDeadLetterActions(t *testing.T) {
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
	if _, err := kadm.NewClient(cl).CreateTopics(ctx, 8, 1, nil, topo.DLQ("inventory"), topo.RetryTopic("inventory")); err != nil {
		t.Fatal(err)
	}
	kcfg := kafka.Config{Brokers: c.ListenAddrs()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopReg, err := ServeRegistry(ctx, registry.Config{Kafka: kcfg, ReplicationFactor: 1}, ln, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stopReg()
	rc, err := avro.NewRegistryClient("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	serde := avro.NewSerde(rc, avro.AutoRegister(true))
	if err := orders.Register(serde); err != nil {
		t.Fatal(err)
	}
	v, err := serde.Encode(ctx, "payments", orders.PaymentAuthorized{OrderID: "o-9", PaymentID: "pay-o-9", AmountCents: 1234})
	if err != nil {
		t.Fatal(err)
	}
	in := &kgo.Record{Topic: "payments", Partition: 5, Offset: 9, Key: []byte("o-9"), Value: v,
		Headers: event.New("troupe.example.orders.PaymentAuthorized", "orders.payment", "o-9").Headers()}
	dl := dlq.NewDeadLetter(in, "inventory", errors.New("warehouse down"), 5, time.Now())
	dl.Topic = topo.DLQ("inventory")
	if err := cl.ProduceSync(ctx, dl).FirstErr(); err != nil {
		t.Fatal(err)
	}
	serve := func(addr string) *api.Server {
		srv := api.New(prometheus.NewRegistry(), zerolog.Nop())
		srv.Bound(&net.TCPAddr{IP: net.ParseIP(addr), Port: 8080})
		MountDeadLetters(srv, kcfg, topo, zerolog.Nop())
		MountRecords(srv, kcfg, topo, serde)
		return srv
	}
	post := func(srv *api.Server, path, body string, hdr ...string) (int, ActionResult, string) {
		t.Helper()
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		var res ActionResult
		_ = json.Unmarshal(rec.Body.Bytes(), &res)
		return rec.Code, res, rec.Body.String()
	}
	retried := func() int64 {
		t.Helper()
		spans, err := replay.Spans(ctx, kadm.NewClient(cl), topo.RetryTopic("inventory"), replay.FromOffset(0))
		if err != nil {
			t.Fatal(err)
		}
		return spans[5].Len()
	}

	open := serve("0.0.0.0")
	if code, _, body := post(open, "/api/deadletters/inventory/5/0/replay", `{}`); code != 403 || !strings.Contains(body, "127.0.0.1") {
		t.Errorf("replay on a server bound to 0.0.0.0: %d %s, want 403 saying how to allow it", code, body)
	}
	local := serve("127.0.0.1")
	for _, hdr := range [][]string{{"Origin", "http://evil.example"}, {"Sec-Fetch-Site", "cross-site"}, {"Content-Type", "text/plain"}} {
		if code, _, body := post(local, "/api/deadletters/inventory/5/0/replay", `{}`, hdr...); code != 403 && code != 415 {
			t.Errorf("replay with %s: %s: %d %s, want refused", hdr[0], hdr[1], code, body)
		}
	}
	code, res, body := post(local, "/api/deadletters/inventory/5/0/replay", `{"dryRun":true}`, "Origin", "http://example.com")
	if code != 200 || !res.DryRun || res.Written != 1 || res.Key != "o-9" || !strings.Contains(res.Message, "orders.inventory.retry partition 5") || retried() != 0 {
		t.Errorf("dry run: %d %s; %d records in the retry topic, want none", code, body, retried())
	}
	code, res, body = post(local, "/api/deadletters/inventory/5/0/replay", `{}`)
	if code != 200 || res.DryRun || res.Written != 1 || retried() != 1 {
		t.Errorf("replay: %d %s; %d records in the retry topic, want 1", code, body, retried())
	}
	if code, _, body := post(local, "/api/deadletters/inventory/5/0/discard", `{}`); code != 409 || !strings.Contains(body, "settled already") || retried() != 1 {
		t.Errorf("discard of a replayed dead letter: %d %s, want 409 and nothing written", code, body)
	}
	for path, want := range map[string]int{
		"/api/deadletters/inventory/5/7/replay": 404, "/api/deadletters/nope/5/0/replay": 404,
		"/api/deadletters/inventory/5/0/resend": 404, "/api/deadletters/inventory/x/0/replay": 400,
	} {
		if code, _, body := post(local, path, `{}`); code != want {
			t.Errorf("POST %s: %d %s, want %d", path, code, body, want)
		}
	}
	rec := httptest.NewRecorder()
	local.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/deadletters", nil))
	var got DeadLetters
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Actions != "" {
		t.Errorf("GET /api/deadletters on loopback: %v, actionsOff %q", err, got.Actions)
	}
	rec = httptest.NewRecorder()
	open.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/deadletters", nil))
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Actions == "" {
		t.Errorf("GET /api/deadletters on 0.0.0.0: %v, no actionsOff", err)
	}

	// The replay as GET /api/records reads it back, decoded with the
	// registry: the event's key, headers and value.
	rec = httptest.NewRecorder()
	local.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/records/orders.inventory.retry/5/0", nil))
	var r Record
	var value struct{ AmountCents int }
	if err := json.Unmarshal(rec.Body.Bytes(), &r); rec.Code != 200 || err != nil || r.Key == nil || *r.Key != "o-9" || r.Error != "" ||
		r.Type != "troupe.example.orders.PaymentAuthorized" || json.Unmarshal(r.Value, &value) != nil || value.AmountCents != 1234 || r.SchemaID == nil {
		t.Errorf("GET /api/records of the replay: %d %v %s", rec.Code, err, rec.Body)
	}
	hs := map[string]string{}
	for _, h := range r.Headers {
		hs[h.Key] = h.Value
	}
	if hs["ce_type"] != "troupe.example.orders.PaymentAuthorized" || hs[dlq.HeaderReplayCount] != "1" {
		t.Errorf("headers of the replay: %v", hs)
	}
	for path, want := range map[string]int{"/api/records/orders.inventory.retry/5/1": 404, "/api/records/secrets/0/0": 404, "/api/records/orders/-1/0": 400} {
		rec = httptest.NewRecorder()
		local.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d %s, want %d", path, rec.Code, rec.Body, want)
		}
	}
}
