package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/dlq"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/replay"
)

// dlqTestRun runs the troupe CLI in process and returns its output and
// exit code, as main would.
func dlqTestRun(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append(args, "--log-level", "error"))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return out.String(), errb.String(), exitOK
	}
	errb.WriteString("error: " + err.Error() + "\n")
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return out.String(), errb.String(), exitUsage
	}
	return out.String(), errb.String(), exitFailure
}

const testTopology = "../../topology/orders.yaml"

// dlqTestCluster starts kfake with orders.payment.dlq and .retry (8
// partitions, as topics apply makes them) and returns its address.
func dlqTestCluster(t *testing.T, ctx context.Context) (string, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(replay.KeepPartition()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	for _, tp := range []string{"orders.payment.dlq", "orders.payment.retry"} {
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 8, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	return c.ListenAddrs()[0], cl
}

// avroOrder is {"orderId": id, "amountCents": 1500} in the wire format,
// schema id 1 (see fakeRegistry).
func avroOrder(id string) []byte {
	b := []byte{0, 0, 0, 0, 1, byte(len(id) * 2)}
	return append(append(b, id...), 0xb8, 0x17)
}

func fakeRegistry(t *testing.T) string {
	const schema = `{"type":"record","name":"OrderPlaced","namespace":"troupe.example.orders","fields":[{"name":"orderId","type":"string"},{"name":"amountCents","type":"long"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/schemas/ids/1" {
			http.Error(w, `{"error_code":40403,"message":"Schema not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"schema": schema})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func writeDeadLetters(t *testing.T, ctx context.Context, cl *kgo.Client) {
	t.Helper()
	at := time.Now().Add(-2 * time.Hour).UTC()
	var recs []*kgo.Record
	for i := range 3 {
		meta := event.New("troupe.example.orders.OrderPlaced", "client", fmt.Sprintf("order-%d", i))
		in := &kgo.Record{Topic: "orders", Partition: 4, Offset: int64(10 + i), Key: []byte(meta.SagaID), Value: avroOrder(meta.SagaID), Headers: meta.Headers()}
		if i == 2 { // a poison record, undecodable, failed recently
			in.Value, in.Headers, at = []byte("garbage\x01"), nil, time.Now().UTC()
		}
		dl := dlq.NewDeadLetter(in, "payment", fmt.Errorf("attempt failed:\ncard %d declined", i), 5, at)
		dl.Topic = "orders.payment.dlq"
		recs = append(recs, dl)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestDLQCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker, cl := dlqTestCluster(t, ctx)
	common := []string{"--brokers", broker, "--topology", testTopology, "--step", "payment"}
	// The subcommand's own flags come last, so they win over common ones.
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return dlqTestRun(t, ctx, append(append(args[:2:2], common...), args[2:]...)...)
	}
	expect := func(wantCode int, want []string, args ...string) string {
		t.Helper()
		out, errs, code := run(args...)
		if code != wantCode {
			t.Fatalf("troupe %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(out+errs, w) {
				t.Errorf("troupe %s: output does not mention %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, out, errs)
			}
		}
		return out
	}

	expect(exitOK, []string{"orders.payment.dlq is empty: step payment has no dead letters"}, "dlq", "list")
	expect(exitOK, []string{"nothing to replay: orders.payment.dlq is empty"}, "dlq", "replay", "--all")
	expect(exitUsage, []string{"no offset 3: orders.payment.dlq is empty"}, "dlq", "show", "--offset", "3")
	expect(exitUsage, []string{`unknown step "pay" (did you mean payment?)`, "payment, inventory, shipping, saga.order-fulfillment"}, "dlq", "list", "--step", "pay")
	expect(exitUsage, []string{`unknown step "inventroy" (did you mean inventory?)`}, "dlq", "list", "--step", "inventroy")
	expect(exitUsage, []string{`unknown command "lst" for "troupe dlq" (did you mean list?)`}, "dlq", "lst")
	expect(exitUsage, []string{"exactly one of --offset N, --all or --since TIME"}, "dlq", "replay")
	expect(exitUsage, []string{"exactly one of --offset N or --all"}, "dlq", "discard", "--all", "--offset", "1")
	expect(exitUsage, []string{"--since", "neither RFC 3339"}, "dlq", "replay", "--since", "yesterday")

	writeDeadLetters(t, ctx, cl)
	out := expect(exitOK, []string{"3 dead letter(s) in orders.payment.dlq (3 outstanding, 0 replayed, 0 discarded)", "card 0 declined"}, "dlq", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[1], "4 ") || !strings.Contains(lines[1], "order-0") || !strings.Contains(lines[1], "OrderPlaced") ||
		!strings.Contains(lines[3], " - ") {
		t.Errorf("list:\n%s", out)
	}
	expect(exitOK, []string{"order-2", "1 dead letter(s)"}, "dlq", "list", "--since", "-1h")

	reg := fakeRegistry(t)
	expect(exitOK, []string{
		"dead letter orders.payment.dlq partition 4 offset 0", "orders partition 4 offset 10", `troupe_dlq_error: "attempt failed:\ncard 0 declined"`,
		"neither replayed nor discarded", "ce_type: troupe.example.orders.OrderPlaced", "value (OrderPlaced, schema id 1):", `"orderId": "order-0"`, `"amountCents": 1500`,
		"card 0 declined",
	}, "dlq", "show", "--offset", "0", "--registry", reg)
	expect(exitOK, []string{"not decoded", "67 61 72 62 61 67 65 01", "|garbage.|"}, "dlq", "show", "--offset", "2", "--registry", reg)
	expect(exitUsage, []string{"offset 9 is not in orders.payment.dlq (it holds partition 4: offsets 0-2)"}, "dlq", "show", "--offset", "9")
	expect(exitUsage, []string{"offset 0 is not in orders.payment.dlq partition 5, which is empty (orders.payment.dlq holds partition 4: offsets 0-2)"}, "dlq", "show", "--offset", "0", "--partition", "5")
	expect(exitUsage, []string{"orders.payment.dlq has no partition 9 (it has partitions 0-7)"}, "dlq", "show", "--offset", "0", "--partition", "9")

	expect(exitOK, []string{"would replay 4@0 -> orders.payment.retry partition 4", "dry run: 3 dead letter(s)"}, "dlq", "replay", "--all", "--dry-run")
	expect(exitOK, []string{"replayed 4@1 -> orders.payment.retry partition 4 offset 0: key order-1, OrderPlaced, replay #1", "replayed 1 dead letter(s) of step payment"},
		"dlq", "replay", "--offset", "1")
	expect(exitOK, []string{"discarded 4@2 -> orders.payment.retry partition 4 offset 1: key order-2", "discarded 1 dead letter(s)"}, "dlq", "discard", "--offset", "2", "--partition", "4")
	expect(exitOK, []string{"(1 outstanding, 1 replayed, 1 discarded)"}, "dlq", "list")
	expect(exitOK, []string{"replayed (last at"}, "dlq", "show", "--offset", "1")

	// Settled once: a second settle writes nothing and says so; --all is
	// the outstanding ones.
	retryLen := func() int64 {
		t.Helper()
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "orders.payment.retry")
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n
	}
	before := retryLen()
	expect(exitOK, []string{"nothing written: dead letter 4@2 of orders.payment.dlq is settled already: discarded at"}, "dlq", "discard", "--offset", "2")
	expect(exitUsage, []string{"settled already: replayed at", "discard the new dead letter"}, "dlq", "discard", "--offset", "1")
	expect(exitOK, []string{"nothing written", "settled already: replayed"}, "dlq", "replay", "--offset", "1")
	expect(exitUsage, []string{"settled already: discarded", "--force"}, "dlq", "replay", "--offset", "2")
	out = expect(exitOK, []string{"would replay 4@0", "skipped 4@1: key order-1, settled already (replayed at", "1 outstanding dead letter(s)", "2 settled already skipped"}, "dlq", "replay", "--all", "--dry-run")
	if strings.Contains(out, "would replay 4@1") || strings.Contains(out, "would replay 4@2") {
		t.Errorf("replay --all --dry-run would replay settled dead letters:\n%s", out)
	}
	if got := retryLen(); got != before {
		t.Fatalf("settles of settled dead letters wrote %d records to orders.payment.retry", got-before)
	}
	expect(exitOK, []string{"discarded 4@0", "discarded 1 dead letter(s) of step payment", "2 settled already skipped"}, "dlq", "discard", "--all")
	expect(exitOK, []string{"nothing to replay: the 3 selected dead letter(s) of step payment are settled already"}, "dlq", "replay", "--all")
	expect(exitOK, []string{"replayed 4@2 -> orders.payment.retry", "replay #1"}, "dlq", "replay", "--offset", "2", "--force")
	expect(exitOK, []string{"(0 outstanding, 2 replayed, 2 discarded)"}, "dlq", "list")
}

// TestDLQCoordinator: the coordinator's dead letters are worked on like a
// step's, by --step saga.<saga> or --coordinator <saga>.
func TestDLQCoordinator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker, cl := dlqTestCluster(t, ctx)
	if out, errs, code := dlqTestRun(t, ctx, "dlq", "list", "--coordinator", "order-fulfillment", "--brokers", broker, "--topology", testTopology); code == exitOK ||
		!strings.Contains(errs, "the coordinator creates it when it first starts: troupe run --coordinator order-fulfillment") {
		t.Errorf("dlq list before the coordinator ran: exit %d\n%s%s", code, out, errs)
	}
	for _, tp := range []string{"orders.saga.order-fulfillment.dlq", "orders.saga.order-fulfillment.retry"} {
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 8, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(wantCode int, want []string, args ...string) string {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, "--brokers", broker, "--topology", testTopology)...)
		if code != wantCode {
			t.Fatalf("troupe %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(out+errs, w) {
				t.Errorf("troupe %s: output does not mention %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, out, errs)
			}
		}
		return out
	}
	expect(exitOK, []string{"orders.saga.order-fulfillment.dlq is empty: step saga.order-fulfillment has no dead letters"}, "dlq", "list", "--coordinator", "order-fulfillment")
	expect(exitUsage, []string{`unknown saga "order-fulfilment" (did you mean order-fulfillment?)`}, "dlq", "list", "--coordinator", "order-fulfilment")
	expect(exitUsage, []string{"--step saga.order-fulfillment"}, "dlq", "list", "--step", "order-fulfillment")
	expect(exitUsage, []string{"--step or --coordinator, not both"}, "dlq", "list", "--step", "payment", "--coordinator", "order-fulfillment")

	meta := event.New("troupe.example.orders.OrderPlaced", "python", "order-9")
	in := &kgo.Record{Topic: "orders", Partition: 3, Offset: 4, Key: []byte("order-9"), Value: avroOrder("order-9"), Headers: meta.Headers()}
	dl := dlq.NewDeadLetter(in, "saga.order-fulfillment", errors.New("ce_time 2026-05-01T10:00:00 has no zone"), 1, time.Now())
	dl.Topic = "orders.saga.order-fulfillment.dlq"
	if err := cl.ProduceSync(ctx, dl).FirstErr(); err != nil {
		t.Fatal(err)
	}
	expect(exitOK, []string{"order-9", "has no zone", "1 dead letter(s) in orders.saga.order-fulfillment.dlq (1 outstanding"}, "dlq", "list", "--step", "saga.order-fulfillment")
	expect(exitOK, []string{"replayed 3@0 -> orders.saga.order-fulfillment.retry partition 3", "of step saga.order-fulfillment"}, "dlq", "replay", "--coordinator", "order-fulfillment", "--offset", "0")
	expect(exitOK, []string{"(0 outstanding, 1 replayed, 0 discarded)"}, "dlq", "list", "--coordinator", "order-fulfillment")
}

// TestDLQOutputSample prints what an operator sees, for review with -v.
func TestDLQOutputSample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker, cl := dlqTestCluster(t, ctx)
	writeDeadLetters(t, ctx, cl)
	reg := fakeRegistry(t)
	for _, args := range [][]string{
		{"dlq", "list"},
		{"dlq", "show", "--offset", "0", "--registry", reg},
		{"dlq", "show", "--offset", "2", "--registry", reg},
		{"dlq", "replay", "--all", "--rate", "100"},
		{"dlq", "list"},
	} {
		out, errs, code := dlqTestRun(t, ctx, append(args, "--brokers", broker, "--topology", testTopology, "--step", "payment")...)
		t.Logf("$ troupe %s  (exit %d)\n%s%s", strings.Join(args, " "), code, out, errs)
		if code != exitOK {
			t.Errorf("exit %d", code)
		}
	}
}
