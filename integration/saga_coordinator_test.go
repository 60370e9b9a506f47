package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/state"
)

// The saga coordinator against the real broker, every step and coordinator
// a `troupe run` process: the end of each failure point of the README's example saga,
// compensation commands in reverse order, lost and missing acks, a
// coordinator killed mid-compensation, SagaEnded cancelling a timer, the
// compensation barrier, and many sagas over three coordinators.

// sagaWant is how an order's saga must end (README: The example saga), and the
// compensation commands it must cause, in order.
type sagaWant struct {
	status      saga.Status
	reason      string
	compensated []string
	commands    []string
}

var wantOf = map[orders.Outcome]sagaWant{
	orders.OutcomeCompleted:  {saga.Completed, "", []string{}, nil},
	orders.OutcomeDeclined:   {saga.Compensated, "PaymentDeclined", []string{}, nil},
	orders.OutcomeOutOfStock: {saga.Compensated, "OutOfStock", []string{"payment"}, []string{"RefundPayment"}},
	orders.OutcomeShipFailed: {saga.Compensated, "ShipmentFailed", []string{"inventory", "payment"}, []string{"ReleaseInventory", "RefundPayment"}},
	orders.OutcomeTimedOut:   {saga.Compensated, "timeout", []string{"payment"}, []string{"RefundPayment"}},
	// An ERR- sku: a dead letter at inventory, then the deadline.
	orders.OutcomeDeadLettered: {saga.Compensated, "timeout", []string{"payment"}, []string{"RefundPayment"}},
}

var commandTypes = []string{"RefundPayment", "ReleaseInventory"}

// apiGet GETs base+path (following redirects) into v and returns the status.
func apiGet(t *testing.T, base, path string, v any) int {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s%s: %v\n%s", base, path, err, body)
		}
	}
	return resp.StatusCode
}

// waitEnded waits until every instance of want has ended, asking base, and
// returns them.
func (e *sagaEnv) waitEnded(base string, want map[string]orders.Outcome, timeout time.Duration) map[string]saga.Instance {
	e.t.Helper()
	got := map[string]saga.Instance{}
	eventually(e.t, timeout, "every saga ended", func() (bool, string) {
		e.alive()
		for id := range want {
			if inst, ok := got[id]; ok && inst.Status.Final() {
				continue
			}
			var inst saga.Instance
			code := apiGet(e.t, base, "/api/sagas/"+url.PathEscape(id), &inst)
			if code != http.StatusOK || !inst.Status.Final() {
				return false, fmt.Sprintf("%s: HTTP %d, status %q", id, code, inst.Status)
			}
			got[id] = inst
		}
		return true, ""
	})
	return got
}

// checkEnds checks each instance's end and the commands in its chain.
func checkEnds(t *testing.T, want map[string]orders.Outcome, got map[string]saga.Instance, chains map[string][]string) {
	t.Helper()
	bad := 0
	for id, o := range want {
		w, inst := wantOf[o], got[id]
		cmds := slices.DeleteFunc(slices.Clone(chains[id]), func(s string) bool { return !slices.Contains(commandTypes, s) })
		if inst.Status != w.status || inst.Reason != w.reason || !slices.Equal(inst.Compensated, w.compensated) || !slices.Equal(cmds, w.commands) {
			if bad++; bad <= 10 {
				t.Errorf("order %s (%s): status %s reason %q compensated %v commands %v; want %s %q %v %v\nhistory: %+v",
					id, o, inst.Status, inst.Reason, inst.Compensated, cmds, w.status, w.reason, w.compensated, w.commands, inst.History)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d sagas ended wrong", bad, len(want))
	}
}

// count returns how many times typ occurs in chain.
func count(chain []string, typ string) int {
	n := 0
	for _, s := range chain {
		if s == typ {
			n++
		}
	}
	return n
}

// metric reads the sum of the series of name whose labels include every
// label="value" pair given, from a process's /metrics.
func metric(t *testing.T, base, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			ok = ok && strings.Contains(line, labels[i]+`="`+labels[i+1]+`"`)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// ready waits until each process answers /readyz with 200: started, its
// partitions assigned and restored (a process stopped before it handles
// signals would die of SIGTERM).
func (e *sagaEnv) ready(ps ...*troupeProc) {
	e.t.Helper()
	for _, p := range ps {
		eventually(e.t, 60*time.Second, p.name+" ready", func() (bool, string) {
			e.alive()
			code := apiGet(e.t, p.http, "/readyz", nil)
			return code == http.StatusOK, fmt.Sprintf("HTTP %d", code)
		})
	}
}

// produceEvent produces one event of the example to its topic, keyed by id.
func (e *sagaEnv) produceEvent(ctx context.Context, id string, ev any) {
	e.t.Helper()
	typ, err := e.serde.TypeName(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	topic, _ := e.topo.TopicOf(typ)
	v, err := e.serde.Encode(ctx, topic, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	m := event.New(typ, "integration-test", id)
	if err := e.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(id), Value: v, Headers: m.Headers()}).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// readTopic reads topic from the start (read_committed) until it has been
// idle for 2 s.
func (e *sagaEnv) readTopic(ctx context.Context, topic string) []*kgo.Record {
	e.t.Helper()
	cl := e.client(kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var out []*kgo.Record
	for idle := 0; idle < 4; {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		n := len(out)
		out = append(out, fs.Records()...)
		if len(out) == n {
			idle++
		} else {
			idle = 0
		}
	}
	return out
}

// changelog reads a step's changelog to its end and returns the latest
// value of every key (nil for a tombstone).
func (e *sagaEnv) changelog(ctx context.Context, step string) map[string][]byte {
	e.t.Helper()
	out := map[string][]byte{}
	for _, r := range e.readTopic(ctx, e.topo.Changelog(step)) {
		out[string(r.Key)] = r.Value
	}
	return out
}

// Each failure point of the README's example saga ends with its status, reason and
// compensated list, the commands in reverse completion order; a SLOW-
// order's inventory timer is cancelled by SagaEnded; a compensation command
// for a step that never ran is acked with no effect, and the order placed
// after it is never charged.
func TestSagaFailurePoints(t *testing.T) {
	e := newSagaEnv(t, "5s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	payment := e.procs[0]
	coord := e.startStep("coordinator", "1")
	ctx := context.Background()

	// Null compensation first: a refund for an order the payment step never
	// saw, then the order itself.
	e.produceEvent(ctx, "fp-null", orders.RefundPayment{OrderID: "fp-null", Reason: "test"})
	e.chains(ctx, 60*time.Second, func(c map[string][]string) bool { return slices.Contains(c["fp-null"], "PaymentRefunded") })
	e.placeOrders(ctx, map[string]orders.Outcome{"fp-null": orders.OutcomeCompleted})

	want := map[string]orders.Outcome{}
	for _, o := range []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed, orders.OutcomeTimedOut} {
		for _, id := range orderIDs("fp-"+string(o), 3) {
			want[id] = o
		}
	}
	e.placeOrders(ctx, want)
	got := e.waitEnded(coord.http, want, 90*time.Second)
	chains := e.chains(ctx, 20*time.Second, func(c map[string][]string) bool {
		for id, o := range want {
			// Acks and commands live on different topics, fetched
			// independently: wait for both.
			if count(c[id], "PaymentRefunded")+count(c[id], "InventoryReleased") < len(wantOf[o].commands) ||
				count(c[id], "RefundPayment")+count(c[id], "ReleaseInventory") < len(wantOf[o].commands) {
				return false
			}
		}
		return true
	})
	checkEnds(t, want, got, chains)

	for id, o := range want {
		if o != orders.OutcomeTimedOut {
			continue
		}
		if c := chains[id]; slices.Contains(c, "InventoryReserved") || slices.Contains(c, "ShipmentScheduled") {
			t.Errorf("SLOW order %s: %v; the inventory step must not answer after the saga ended", id, c)
		}
	}
	// The inventory step's timer of each SLOW order was set and then
	// deleted (a tombstone in its changelog), long before its 60 s.
	cl := e.changelog(ctx, "inventory")
	for id, o := range want {
		if o != orders.OutcomeTimedOut {
			continue
		}
		if v, ok := cl[string(state.TimerIndexKey(id, "slow-reserve"))]; !ok || v != nil {
			t.Errorf("SLOW order %s: inventory timer index in the changelog: present %v, value %q; want a tombstone", id, ok, v)
		}
	}

	// fp-null: acked with no effect; its order never paid (a hanging
	// OrderPlaced is dropped); the coordinator times it out with nothing to undo.
	if c := chains["fp-null"]; slices.Contains(c, "PaymentAuthorized") || slices.Contains(c, "PaymentDeclined") || count(c, "PaymentRefunded") != 1 {
		t.Errorf("null compensation order: events %v, want one PaymentRefunded and no payment", c)
	}
	for outcome, n := range map[string]float64{"null_compensation": 1, "dropped": 1} {
		eventually(t, 10*time.Second, "payment step counts "+outcome, func() (bool, string) {
			got := metric(t, payment.http, "troupe_step_events_total", "step", "payment", "outcome", outcome)
			return got == n, fmt.Sprint(got)
		})
	}
	null := e.waitEnded(coord.http, map[string]orders.Outcome{"fp-null": ""}, 30*time.Second)["fp-null"]
	if null.Status != saga.Compensated || null.Reason != "timeout" || len(null.Compensated) != 0 {
		t.Errorf("fp-null: %s %q %v, want COMPENSATED timeout []", null.Status, null.Reason, null.Compensated)
	}

	// troupe saga get, and the stats.
	var xx string
	for id, o := range want {
		if o == orders.OutcomeShipFailed {
			xx = id
		}
	}
	out, err := runTroupe(t, ctx, "saga", "get", xx, "--api", coord.http)
	if err != nil {
		t.Fatalf("troupe saga get: %v\n%s", err, out)
	}
	var inst saga.Instance
	if err := json.Unmarshal([]byte(out), &inst); err != nil || inst.ID != xx || !slices.Equal(inst.Compensated, []string{"inventory", "payment"}) || inst.Reason != "ShipmentFailed" {
		t.Errorf("troupe saga get %s: %v\n%s", xx, err, out)
	}
	var st saga.Stats
	if code := apiGet(t, coord.http, "/api/sagas/stats", &st); code != 200 || st.ByStatus[saga.Completed] != 3 || st.ByStatus[saga.Compensated] != 13 {
		t.Errorf("stats: HTTP %d %+v, want 3 COMPLETED and 13 COMPENSATED", code, st)
	}
	if n := metric(t, coord.http, "troupe_saga_compensations_total", "step", "inventory", "outcome", "acked"); n != 3 {
		t.Errorf("troupe_saga_compensations_total{step=inventory,outcome=acked} = %v, want 3", n)
	}
}

// A compensation ack lost while its step is down (stopped with the command
// in flight): the command is sent again, and once the step is back the saga
// ends COMPENSATED. A step that never acks makes the saga FAILED after the
// policy's attempts.
func TestSagaCompensationRetries(t *testing.T) {
	e := newSagaEnv(t, "60s", "timeout: 10s\n  attempts: 5", "timeout: 3s\n  attempts: 4")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	payment, inventory, shipping := e.procs[0], e.procs[1], e.procs[2]
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	ctx := context.Background()

	// Lost ack: payment authorizes, then stops; the OutOfStock comes while
	// it is down.
	if err := inventory.Stop(); err != nil {
		t.Fatal(err)
	}
	e.placeOrders(ctx, map[string]orders.Outcome{"lost-ack": orders.OutcomeOutOfStock})
	e.chains(ctx, 30*time.Second, func(c map[string][]string) bool { return slices.Contains(c["lost-ack"], "PaymentAuthorized") })
	if err := payment.Stop(); err != nil {
		t.Fatal(err)
	}
	inventory = e.startStep("inventory", "1")
	e.ready(inventory)
	e.chains(ctx, 30*time.Second, func(c map[string][]string) bool { return count(c["lost-ack"], "RefundPayment") >= 2 })
	e.startStep("payment", "1")
	got := e.waitEnded(coord.http, map[string]orders.Outcome{"lost-ack": orders.OutcomeOutOfStock}, 30*time.Second)["lost-ack"]
	if got.Status != saga.Compensated || got.Reason != "OutOfStock" || !slices.Equal(got.Compensated, []string{"payment"}) {
		t.Errorf("lost ack: %s %q %v; want COMPENSATED OutOfStock [payment]\n%+v", got.Status, got.Reason, got.Compensated, got.History)
	}
	if !slices.ContainsFunc(got.History, func(h saga.Entry) bool { return h.Type == "CompensationTimeout" }) {
		t.Errorf("lost ack: no CompensationTimeout in the history %+v", got.History)
	}

	// Never acked: shipping fails the order while inventory is down for good.
	if err := shipping.Stop(); err != nil {
		t.Fatal(err)
	}
	e.placeOrders(ctx, map[string]orders.Outcome{"no-ack": orders.OutcomeShipFailed})
	e.chains(ctx, 30*time.Second, func(c map[string][]string) bool { return slices.Contains(c["no-ack"], "InventoryReserved") })
	if err := inventory.Stop(); err != nil {
		t.Fatal(err)
	}
	e.startStep("shipping", "1")
	got = e.waitEnded(coord.http, map[string]orders.Outcome{"no-ack": orders.OutcomeShipFailed}, 40*time.Second)["no-ack"]
	if got.Status != saga.Failed || got.Reason != "ShipmentFailed" || len(got.Compensated) != 0 || !strings.Contains(got.Error, "inventory") {
		t.Errorf("never acked: %s %q %v %q; want FAILED ShipmentFailed [] and an error naming inventory", got.Status, got.Reason, got.Compensated, got.Error)
	}
	c := e.chains(ctx, 10*time.Second, func(c map[string][]string) bool { return count(c["no-ack"], "ReleaseInventory") >= 4 })
	if n := count(c["no-ack"], "ReleaseInventory"); n != 4 || count(c["no-ack"], "RefundPayment") != 0 {
		t.Errorf("never acked: %d ReleaseInventory (want 4 attempts) and %d RefundPayment (want 0): %v", n, count(c["no-ack"], "RefundPayment"), c["no-ack"])
	}
	if n := metric(t, coord.http, "troupe_saga_compensations_total", "step", "inventory", "outcome", "failed"); n != 1 {
		t.Errorf("troupe_saga_compensations_total{step=inventory,outcome=failed} = %v, want 1", n)
	}
}

// The coordinator killed with kill -9 while it is compensating: restarted,
// it finishes every saga, and every compensation is done once (one command
// and one ack each).
func TestSagaCoordinatorKilledMidCompensation(t *testing.T) {
	// A compensation timeout well above the outage: a re-sent command
	// would not be a second compensation, but it would blur the check.
	e := newSagaEnv(t, "90s", "timeout: 10s", "timeout: 40s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	payment, shipping := e.procs[0], e.procs[2]
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	ctx := context.Background()

	// Orders wait for shipping; then payment goes; then shipping fails
	// them all, and the coordinator releases inventory and sends refunds
	// that payment cannot ack.
	if err := shipping.Stop(); err != nil {
		t.Fatal(err)
	}
	n := 100
	want := map[string]orders.Outcome{}
	for _, id := range orderIDs("kill", n) {
		want[id] = orders.OutcomeShipFailed
	}
	e.placeOrders(ctx, want)
	e.chains(ctx, 60*time.Second, func(c map[string][]string) bool {
		for id := range want {
			if !slices.Contains(c[id], "InventoryReserved") {
				return false
			}
		}
		return true
	})
	if err := payment.Stop(); err != nil {
		t.Fatal(err)
	}
	e.startStep("shipping", "1")
	// Kill as soon as compensation has begun: some sagas have had their
	// inventory released, some not, refunds are in flight.
	releases, refunds := 0, 0
	e.chains(ctx, 60*time.Second, func(c map[string][]string) bool {
		releases, refunds = 0, 0
		for id := range want {
			releases += count(c[id], "ReleaseInventory")
			refunds += count(c[id], "RefundPayment")
		}
		return releases > 0
	})
	coord.Kill()
	t.Logf("coordinator killed mid-compensation: %d of %d releases and %d refunds sent", releases, n, refunds)
	coord = e.startStep("coordinator", "1")
	e.startStep("payment", "1")

	got := e.waitEnded(coord.http, want, 90*time.Second)
	chains := e.chains(ctx, 30*time.Second, func(c map[string][]string) bool {
		for id := range want {
			for _, typ := range []string{"ReleaseInventory", "InventoryReleased", "RefundPayment", "PaymentRefunded"} {
				if count(c[id], typ) < 1 { // topics are fetched independently: wait for each
					return false
				}
			}
		}
		return true
	})
	checkEnds(t, want, got, chains)
	bad := 0
	for id := range want {
		c := chains[id]
		if count(c, "ReleaseInventory") != 1 || count(c, "RefundPayment") != 1 || count(c, "InventoryReleased") != 1 || count(c, "PaymentRefunded") != 1 {
			if bad++; bad <= 5 {
				t.Errorf("order %s: %v; want each command and each ack once", id, c)
			}
		}
	}
	ended := map[string]int{}
	for _, r := range e.readTopic(ctx, e.topo.EndedTopic()) {
		ended[string(r.Key)]++
	}
	for id := range want {
		if ended[id] != 1 {
			t.Errorf("order %s: %d SagaEnded, want 1", id, ended[id])
		}
	}
}

// Many sagas at a steady rate over three coordinator processes: every saga
// reaches its expected end, and /api/sagas/stats (merged from the three)
// matches; any coordinator answers for any instance (307 to its owner).
func TestSagaManyWithThreeCoordinators(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	e := newSagaEnv(t, "120s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	var coords []*troupeProc
	for i := range 3 {
		coords = append(coords, e.startStep("coordinator", strconv.Itoa(i+1)))
	}
	ctx := context.Background()
	outcomes := []orders.Outcome{orders.OutcomeCompleted, orders.OutcomeDeclined, orders.OutcomeOutOfStock, orders.OutcomeShipFailed}
	want := map[string]orders.Outcome{}
	wantStats := map[saga.Status]int{}
	ids := orderIDs("many", n)
	for i, id := range ids {
		want[id] = outcomes[i%len(outcomes)]
		wantStats[wantOf[want[id]].status]++
	}
	// 1,000 orders/s, in batches of 100.
	start := time.Now()
	for lo := 0; lo < n; lo += 100 {
		batch := map[string]orders.Outcome{}
		for _, id := range ids[lo:min(lo+100, n)] {
			batch[id] = want[id]
		}
		e.placeOrders(ctx, batch)
		time.Sleep(time.Until(start.Add(time.Duration(lo+100) * time.Millisecond)))
	}
	t.Logf("%d orders placed in %s", n, time.Since(start).Round(time.Millisecond))

	var st saga.Stats
	eventually(t, 150*time.Second, "stats show every saga ended", func() (bool, string) {
		e.alive()
		st = saga.Stats{}
		code := apiGet(t, coords[0].http, "/api/sagas/stats", &st)
		return code == 200 && st.ByStatus[saga.Completed] == wantStats[saga.Completed] && st.ByStatus[saga.Compensated] == wantStats[saga.Compensated],
			fmt.Sprintf("HTTP %d %v, want %v", code, st.ByStatus, wantStats)
	})
	t.Logf("%d sagas ended %s after the first order: %v", n, time.Since(start).Round(time.Millisecond), st.ByStatus)
	if len(st.Partitions) != int(e.topo.Partitions) || st.ByStatus[saga.Running]+st.ByStatus[saga.Compensating]+st.ByStatus[saga.Failed] != 0 {
		t.Errorf("stats %+v", st)
	}
	// Each coordinator serves a share; the shares add up.
	sum := 0
	for _, c := range coords {
		var local saga.Stats
		if code := apiGet(t, c.http, "/api/sagas/stats?scope=local", &local); code != 200 {
			t.Fatalf("local stats of %s: HTTP %d", c.name, code)
		}
		for _, v := range local.ByStatus {
			sum += v
		}
		t.Logf("%s serves partitions %v", c.name, local.Partitions)
	}
	if sum != n {
		t.Errorf("local stats add up to %d, want %d", sum, n)
	}

	// Every instance through the merged list, 1,000 a page, from another
	// coordinator.
	got := map[string]saga.Instance{}
	cursor := ""
	for pages := 0; ; pages++ {
		var page saga.Page
		if code := apiGet(t, coords[1].http, "/api/sagas?limit=1000&cursor="+url.QueryEscape(cursor), &page); code != 200 {
			t.Fatalf("list page %d: HTTP %d", pages, code)
		}
		for _, it := range page.Items {
			if _, dup := got[it.ID]; dup {
				t.Fatalf("instance %s listed twice", it.ID)
			}
			got[it.ID] = it
		}
		if cursor = page.Next; cursor == "" || pages > n/1000+2 {
			break
		}
	}
	if len(got) != n {
		t.Fatalf("listed %d instances, want %d", len(got), n)
	}
	bad := 0
	for id, o := range want {
		w, inst := wantOf[o], got[id]
		if inst.Status != w.status || inst.Reason != w.reason || !slices.Equal(inst.Compensated, w.compensated) {
			if bad++; bad <= 10 {
				t.Errorf("order %s (%s): %s %q %v, want %s %q %v", id, o, inst.Status, inst.Reason, inst.Compensated, w.status, w.reason, w.compensated)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d sagas ended wrong", bad, n)
	}

	// One id, asked of a coordinator that does not serve it: 307 to the owner.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirects := 0
	for _, c := range coords {
		resp, err := noFollow.Get(c.http + "/api/sagas/" + ids[0])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTemporaryRedirect {
			redirects++
			var inst saga.Instance
			if code := apiGet(t, c.http, "/api/sagas/"+ids[0], &inst); code != 200 || inst.ID != ids[0] {
				t.Errorf("following the redirect of %s: HTTP %d %+v", c.name, code, inst)
			}
		} else if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET /api/sagas/%s: %s", c.name, ids[0], resp.Status)
		}
	}
	if redirects != 2 {
		t.Errorf("%d of 3 coordinators redirected, want 2 (one serves the instance)", redirects)
	}
}

// An order the inventory handler always fails (an ERR- sku): after the
// retry policy's attempts its PaymentAuthorized is a dead letter, which the
// coordinator shows in the instance (deadLetters, history, with its place in
// the DLQ) while the saga times out and refunds the payment. A replay fails
// again, a new dead letter; `troupe dlq discard` of that one settles it and
// releases the events the inventory step parked behind it (SagaEnded).
func TestSagaDeadLetterInHistory(t *testing.T) {
	e := newSagaEnv(t, "5s")
	for _, s := range []string{"payment", "inventory", "shipping"} {
		e.startStep(s, "1")
	}
	inventory := e.procs[1]
	coord := e.startStep("coordinator", "1")
	e.ready(e.procs...)
	ctx := context.Background()

	want := map[string]orders.Outcome{"dl-err": orders.OutcomeDeadLettered, "dl-ok": orders.OutcomeCompleted}
	e.placeOrders(ctx, want)
	got := e.waitEnded(coord.http, want, 60*time.Second)
	chains := e.chains(ctx, 20*time.Second, func(c map[string][]string) bool {
		return slices.Contains(c["dl-err"], "RefundPayment") && slices.Contains(c["dl-err"], "PaymentRefunded")
	})
	checkEnds(t, want, got, chains)

	// The coordinator reads the DLQ and the business topics independently:
	// the dead letter may come after the saga's end.
	var inst saga.Instance
	eventually(t, 30*time.Second, "the coordinator records the dead letter", func() (bool, string) {
		apiGet(t, coord.http, "/api/sagas/dl-err", &inst)
		return len(inst.DeadLetters) == 1, fmt.Sprintf("deadLetters %+v (inventory: %v retries, %v dead letters)\nhistory %+v", inst.DeadLetters,
			metric(t, inventory.http, "troupe_step_retries_total"), metric(t, inventory.http, "troupe_step_dead_letters_total"), inst.History)
	})
	first := inst.DeadLetters[0]
	if first.Step != "inventory" || first.Event != "PaymentAuthorized" || first.Attempts != 5 || !strings.Contains(first.Error, "warehouse system unavailable") {
		t.Errorf("dl-err: dead letter %+v; want PaymentAuthorized at inventory after 5 attempts", first)
	}
	if !slices.ContainsFunc(inst.History, func(h saga.Entry) bool { return h.Type == saga.EntryDeadLetter && h.Offset == first.Offset }) {
		t.Errorf("dl-err: no DeadLetter entry at offset %d in the history %+v", first.Offset, inst.History)
	}
	eventually(t, 10*time.Second, "inventory parks the SagaEnded of dl-err", func() (bool, string) {
		n := metric(t, inventory.http, "troupe_step_parked_events")
		return n >= 1, fmt.Sprint(n)
	})

	at := []string{"--topology", e.file, "--step", "inventory", "--partition", strconv.Itoa(int(first.Partition))}
	out, err := runTroupe(t, ctx, append([]string{"dlq", "replay", "--offset", strconv.FormatInt(first.Offset, 10)}, at...)...)
	if err != nil {
		t.Fatalf("troupe dlq replay: %v\n%s", err, out)
	}
	var second saga.DeadLetter
	eventually(t, 30*time.Second, "the replay fails again: a second dead letter", func() (bool, string) {
		var inst saga.Instance
		apiGet(t, coord.http, "/api/sagas/dl-err", &inst)
		if len(inst.DeadLetters) != 1 || inst.DeadLetters[0].Offset == first.Offset {
			return false, fmt.Sprintf("deadLetters %+v", inst.DeadLetters)
		}
		second = inst.DeadLetters[0]
		return true, ""
	})

	out, err = runTroupe(t, ctx, append([]string{"dlq", "discard", "--offset", strconv.FormatInt(second.Offset, 10)}, at...)...)
	if err != nil {
		t.Fatalf("troupe dlq discard: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, "the discard settles the dead letter", func() (bool, string) {
		var inst saga.Instance
		apiGet(t, coord.http, "/api/sagas/dl-err", &inst)
		var kinds []string
		for _, h := range inst.History {
			if strings.HasPrefix(h.Type, saga.EntryDeadLetter) {
				kinds = append(kinds, h.Type)
			}
		}
		ok := len(inst.DeadLetters) == 0 && slices.Equal(kinds, []string{saga.EntryDeadLetter, saga.EntryReplayed, saga.EntryDeadLetter, saga.EntryDiscarded})
		return ok, fmt.Sprintf("deadLetters %+v, dead-letter history %v", inst.DeadLetters, kinds)
	})
	eventually(t, 20*time.Second, "inventory released what it parked", func() (bool, string) {
		n := metric(t, inventory.http, "troupe_step_parked_events")
		return n == 0, fmt.Sprint(n)
	})
	if c := e.chains(ctx, 5*time.Second, func(map[string][]string) bool { return false }); slices.Contains(c["dl-err"], "InventoryReserved") {
		t.Errorf("dl-err: %v; the discarded event must not run", c["dl-err"])
	}
}
