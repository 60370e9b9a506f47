package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"github.com/troupehq/troupe/pkg/freeport"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
)

func freePort(t *testing.T) int { return freeport.Port(t) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDev runs Dev in the background and returns a stop function that
// waits for it to return.
func startDev(t *testing.T, o DevOptions) (stop func()) {
	t.Helper()
	return startDevWithToken(t, o, "")
}

// startDevWithToken is startDev with an auth token (--auth-token-file).
func startDevWithToken(t *testing.T, o DevOptions, token string) (stop func()) {
	t.Helper()
	g := &Globals{Log: zerolog.Nop(), authToken: token}
	app := App{Name: "troupe", Version: "test", Types: orders.Register, Steps: orders.Steps}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Dev(ctx, app, g, o) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("dev did not stop within 30 s")
		}
	}
}

// waitReady waits until /readyz on addr answers 200: the stack is up and
// every step has restored its state.
func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("troupe dev on %s not ready after 90 s", addr)
}

// countTypes reads the example's business topics from the start and counts
// events by type.
func countTypes(t *testing.T, addr string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := []string{"orders", "payments", "inventory", "shipping"}
	cl, err := kafka.NewClient(ctx, kafka.Config{Brokers: []string{addr}}, kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	counts := map[string]int{}
	idle := 0
	for idle < 3 {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			typ, _ := event.Header(r, event.HeaderType)
			counts[typ]++
			n++
		})
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	return counts
}

// troupe dev on a temp data dir processes the demo load; stopped and started
// again, it carries on without processing old orders twice.
func TestDevRestartContinues(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack twice")
	}
	const ns = orders.Namespace + "."
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), DemoRate: 40, SummaryEvery: time.Second, Out: &syncBuffer{},
	}
	addr := "127.0.0.1:" + strconv.Itoa(o.KafkaPort)
	stop := startDev(t, o)
	waitReady(t, o.HTTP)
	// Stopped while the demo load runs, once it has placed enough orders.
	for deadline := time.Now().Add(60 * time.Second); countTypes(t, addr)[ns+"OrderPlaced"] < 50; {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 50 orders placed after 60 s at 40/s: %v", countTypes(t, addr))
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()

	// Second run, no new orders: whatever was placed is processed exactly once.
	o.DemoRate = 0
	stop = startDev(t, o)
	defer stop()
	waitReady(t, o.HTTP)
	var c map[string]int
	deadline := time.Now().Add(60 * time.Second)
	for {
		c = countTypes(t, addr)
		if c[ns+"OrderPlaced"] > 0 && c[ns+"PaymentAuthorized"]+c[ns+"PaymentDeclined"] >= c[ns+"OrderPlaced"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orders not all processed after the restart: %v", c)
		}
	}
	time.Sleep(3 * time.Second) // room for a wrongful re-run to show
	c = countTypes(t, addr)
	placed := c[ns+"OrderPlaced"]
	if paid := c[ns+"PaymentAuthorized"] + c[ns+"PaymentDeclined"]; paid != placed {
		t.Errorf("%d orders placed, %d payment outcomes: some were processed twice or not at all", placed, paid)
	}
	if got := c[ns+"ShipmentScheduled"] + c[ns+"ShipmentFailed"]; got != c[ns+"InventoryReserved"] {
		t.Errorf("%d reservations, %d shipping outcomes", c[ns+"InventoryReserved"], got)
	}
}

// troupe dev on ports that are not the CLI's defaults, with no demo load:
// the banner's export line points the CLI at it, the example's schemas are
// registered under the topology's subjects before anything runs (so an
// OrderPlaced can be produced from JSON, as `troupe produce` does, and its
// saga completes), and a second dev on the same data dir is refused with the
// first one's pid before it opens anything (it does not even bind its
// ports, which the first one holds).
func TestDevRegistersSchemasAndLocksItsDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	out := &syncBuffer{}
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), SummaryEvery: time.Minute, Out: out,
	}
	stop := startDev(t, o)
	defer stop()
	waitReady(t, o.HTTP)

	// The banner's export line, run as printed.
	var export string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "  export ") {
			export = strings.TrimPrefix(l, "  export ")
		}
	}
	want := fmt.Sprintf("TROUPE_BROKERS=127.0.0.1:%d TROUPE_REGISTRY_URL=http://127.0.0.1:%d TROUPE_API_URL=http://%s", o.KafkaPort, o.RegistryPort, o.HTTP)
	if export != want {
		t.Fatalf("banner's export line %q, want %q; banner:\n%s", export, want, out.String())
	}
	for _, kv := range strings.Fields(export) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	g := Globals{}
	g.AddFlags(pflag.NewFlagSet("troupe", pflag.ContinueOnError))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rc, err := avro.NewRegistryClient(g.Registry)
	if err != nil {
		t.Fatal(err)
	}
	subjects, err := rc.Subjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(subjects)
	wantSubjects := []string{
		"compensations-troupe.example.orders.RefundPayment", "compensations-troupe.example.orders.ReleaseInventory",
		"inventory-troupe.example.orders.InventoryReleased", "inventory-troupe.example.orders.InventoryReserved", "inventory-troupe.example.orders.OutOfStock",
		"orders-troupe.example.orders.OrderPlaced", "orders.saga.order-fulfillment.ended-troupe.saga.SagaEnded",
		"payments-troupe.example.orders.PaymentAuthorized", "payments-troupe.example.orders.PaymentDeclined", "payments-troupe.example.orders.PaymentRefunded",
		"shipping-troupe.example.orders.ShipmentFailed", "shipping-troupe.example.orders.ShipmentScheduled",
	}
	if !slices.Equal(subjects, wantSubjects) {
		t.Fatalf("subjects after start:\n %v\nwant\n %v", subjects, wantSubjects)
	}

	// What `troupe produce` does: JSON in, the registered schema, no Go types.
	serde := avro.NewSerde(rc, avro.AutoRegister(false))
	value, err := serde.EncodeJSON(ctx, "orders", orders.Namespace+".OrderPlaced", []byte(`{"orderId":"dev-1","customerId":"c","amountCents":100,"currency":"EUR",
		"items":[{"sku":"A","quantity":1}],"shipTo":{"name":"n","line1":"l","city":"c","country":"GB"},"placedAt":"2026-01-02T03:04:05Z"}`))
	if err != nil {
		t.Fatalf("encode an OrderPlaced with the registered schema: %v", err)
	}
	cl, err := kafka.NewClient(ctx, kafka.Config{Brokers: SplitList(g.Brokers)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	meta := event.New(orders.Namespace+".OrderPlaced", "test", "dev-1")
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte("dev-1"), Value: value, Headers: meta.Headers()}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var status string
	for status != "COMPLETED" {
		if ctx.Err() != nil {
			t.Fatalf("saga dev-1 is %q after 90 s, want COMPLETED", status)
		}
		resp, err := http.Get(g.API + "/api/sagas/dev-1")
		if err == nil {
			var inst struct{ Status string }
			_ = json.NewDecoder(resp.Body).Decode(&inst)
			resp.Body.Close()
			status = inst.Status
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A second dev on the same data dir and ports.
	second := o
	second.Out = &syncBuffer{}
	err = Dev(ctx, App{Name: "troupe", Types: orders.Register, Steps: orders.Steps}, &Globals{Log: zerolog.Nop()}, second)
	wantErr := fmt.Sprintf("data dir %s is in use by another troupe dev (pid %d); stop it or pass another --data-dir", o.DataDir, os.Getpid())
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("second dev: %v\nwant %q", err, wantErr)
	}
}
