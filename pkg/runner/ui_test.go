package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/saga"
	topologies "github.com/troupehq/troupe/topology"
)

// chromium returns the path of a headless-capable Chromium, or skips the
// test (fails it under CI=true, where .ci/deps installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (bash .ci/deps installs it under CI)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); the UI's browser test needs it")
	return ""
}

// uiToken is the token of TestDevUIInBrowser's stack.
const uiToken = "ui-token-7c2e91"

// apiGet GETs the dev API into v and reports whether it answered 200. It
// sends uiToken, which a stack without a token ignores.
func apiGet(t *testing.T, base, path string, v any) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+uiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

// The UI in a real browser, over `troupe dev` with its demo load, as a
// user would look at it: the overview with the saga's diagram, counts and
// list; a compensated order's path on the diagram (checked against the
// saga's completed and compensated), its timeline in order, an event of
// its history opened and decoded; nothing wider than the window at 1280
// and 390 px; and a real dead letter replayed from the page, with its dry
// run and confirmation, settled in the saga's history. Screenshots go to
// the test's artifact directory (go test -artifacts keeps them).
//
// The stack has a token (--auth-token-file): without it, the page shows
// the API's 401 and a form for the token; it takes it from the address
// (#token=, beside the page's own route), and sends it with the replay.
func TestDevUIInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack and a browser")
	}
	path := chromium(t)
	// The example with a deadline that a slow machine does not reach: the
	// dead-lettered order stays held until the page replays it.
	topo := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(topo, bytes.Replace(topologies.Orders, []byte("deadline: 30s"), []byte("deadline: 10m"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), DemoRate: 5, SummaryEvery: time.Minute, Out: &syncBuffer{}, Topology: topo,
	}
	stop := startDevWithToken(t, o, uiToken)
	defer stop()
	waitReady(t, o.HTTP)
	base := "http://" + o.HTTP
	shots := t.ArtifactDir()

	// An order that the inventory step dead-letters, and one whose
	// shipment fails: compensated in reverse order, inventory then payment.
	ctx := t.Context()
	rc, err := avro.NewRegistryClient("http://127.0.0.1:"+strconv.Itoa(o.RegistryPort), sr.BearerToken(uiToken))
	if err != nil {
		t.Fatal(err)
	}
	serde := avro.NewSerde(rc, avro.AutoRegister(true))
	if err := orders.Register(serde); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(ctx, kafka.Config{Brokers: []string{"127.0.0.1:" + strconv.Itoa(o.KafkaPort)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for id, outcome := range map[string]orders.Outcome{"ui-err": orders.OutcomeDeadLettered, "ui-comp": orders.OutcomeShipFailed} {
		rec, err := orders.Record(ctx, serde, orders.TopicOrders, orders.NewOrder(id, outcome, time.Now()), "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var held, comp saga.Instance
	var st saga.Stats
	deadline := time.Now().Add(90 * time.Second)
	for !(apiGet(t, base, "/api/sagas/ui-err", &held) && len(held.DeadLetters) == 1 &&
		apiGet(t, base, "/api/sagas/ui-comp", &comp) && comp.Status == saga.Compensated &&
		apiGet(t, base, "/api/sagas/stats", &st) && st.ByStatus[saga.Completed] > 0) {
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s: ui-err %+v, ui-comp %+v, stats %+v", held, comp, st)
		}
		time.Sleep(200 * time.Millisecond)
	}

	b := startBrowser(t, path, 1280, 900)
	// Generous: on a loaded machine a step or the coordinator lags by tens
	// of seconds.
	wait := func(what, expr string) { t.Helper(); b.waitFor(ctx, what, expr, 90*time.Second) }

	// Without the token: the API's 401, and the form that asks for it.
	b.open(base + "/")
	wait("the token form", `document.querySelector('#token-form') && document.body.innerText.includes("This troupe API requires a token") && document.body.innerText.includes("HTTP 401")`)

	// The overview: counts, the diagram without an instance, the list.
	b.open(base + "/?with-token#/&token=" + uiToken) // a new query: a new document, whose auth.js reads the fragment
	wait("the overview", `document.querySelector('[data-status="COMPLETED"]') && document.querySelectorAll('svg.diagram g[data-node]').length > 0 && document.querySelector('tr[data-id^="order-"]') && document.querySelector('#orphans')`)
	var states []string
	b.must(`[...new Set([...document.querySelectorAll('svg.diagram g[data-node]')].map((g) => g.dataset.state))]`, &states)
	if len(states) != 1 || states[0] != "plain" {
		t.Errorf("the overview's diagram marks nodes %v; want all plain (no instance)", states)
	}
	wait("the dead letter on the overview", `document.querySelector('#deadletters [data-deadletter^="inventory/"]')`)
	checkLayout(t, b, "overview", 1280)
	b.screenshot(filepath.Join(shots, "overview-1280.png"), 1280, 900)

	// The compensated order: its path, timeline and an event.
	b.open(base + "/#/sagas/ui-comp")
	wait("ui-comp's page", `document.querySelectorAll('#timeline li.row').length >= 5 && document.querySelector('#history tr.entry')`)
	var marked []struct {
		Node, State string
		Order       int
	}
	b.must(`[...document.querySelectorAll('#diagram-path g.node.step')].map((g) => ({node: g.dataset.node, state: g.dataset.state, order: +(g.dataset.order || 0)}))`, &marked)
	var done, undone []string
	for _, m := range marked {
		name := strings.TrimPrefix(m.Node, "s_")
		if m.State == "done" || m.State == "compensated" {
			done = append(done, name)
		}
		if m.State == "compensated" {
			if m.Order < 1 || m.Order > len(comp.Compensated) || comp.Compensated[m.Order-1] != name {
				t.Errorf("step %s marked compensated #%d; the saga compensated %v", name, m.Order, comp.Compensated)
			}
			undone = append(undone, name)
		}
	}
	slices.Sort(done)
	slices.Sort(undone)
	wantDone, wantUndone := slices.Sorted(slices.Values(comp.Completed)), slices.Sorted(slices.Values(comp.Compensated))
	if !slices.Equal(done, wantDone) || !slices.Equal(undone, wantUndone) || len(wantUndone) != 2 {
		t.Errorf("diagram marks completed %v and compensated %v; the saga has completed %v, compensated %v", done, undone, comp.Completed, comp.Compensated)
	}
	var failing []string
	b.must(`[...document.querySelectorAll('#diagram-path g.node.failed')].map((g) => g.dataset.node)`, &failing)
	if !slices.Contains(failing, "e_troupe_example_orders_ShipmentFailed") {
		t.Errorf("the failing event is not marked failed: %v", failing)
	}
	var rows []struct {
		Step, Phase string
		Start       float64
	}
	b.must(`[...document.querySelectorAll('#timeline li.row')].map((li) => ({step: li.dataset.step, phase: li.dataset.phase, start: +li.dataset.start}))`, &rows)
	var order []string
	for i, r := range rows {
		order = append(order, r.Phase+" "+r.Step)
		if i > 0 && r.Start < rows[i-1].Start {
			t.Errorf("timeline row %s starts before the row above it", order[i])
		}
	}
	wantOrder := []string{"forward payment", "forward inventory", "forward shipping", "compensation " + comp.Compensated[0], "compensation " + comp.Compensated[1]}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("timeline rows %v, want %v", order, wantOrder)
	}
	var times []string
	b.must(`[...document.querySelectorAll('.time')].map((e) => e.textContent)`, &times)
	oneFormat := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+$`)
	for _, s := range times {
		if !oneFormat.MatchString(s) {
			t.Errorf("time %q is not in the one format (local, ms, zone)", s)
		}
	}
	var hist []struct{ Type, Time string }
	b.must(`[...document.querySelectorAll('#history tr[data-entry]')].map((tr) => ({type: tr.children[1].textContent, time: tr.children[0].textContent}))`, &hist)
	for i := 1; i < len(comp.History); i++ {
		if comp.History[i].Time.Before(comp.History[i-1].Time) {
			t.Errorf("the API's history is not in time order at %d: %+v", i, comp.History)
		}
	}
	// The page may show more than comp (a late re-send on a slow machine),
	// never fewer, and in the order they happened (one zone, so the text
	// sorts as the times do).
	if len(hist) < len(comp.History) || hist[0].Type != "OrderPlaced" {
		t.Errorf("history rows %v; the API had %d entries", hist, len(comp.History))
	}
	for i := 1; i < len(hist); i++ {
		if hist[i].Time < hist[i-1].Time {
			t.Errorf("history row %d (%s %s) is before the row above it (%s %s)", i, hist[i].Type, hist[i].Time, hist[i-1].Type, hist[i-1].Time)
		}
	}
	b.must(`document.querySelector('#history tr[data-record^="shipping/"]').click()`, nil)
	wait("the ShipmentFailed event opened", `document.querySelector('#event [data-field="value"]')`)
	var ev struct{ Type, Value, Headers string }
	b.must(`({type: document.querySelector('#event [data-field="type"]').textContent, value: document.querySelector('#event [data-field="value"]').textContent, headers: document.querySelector('#event table.headers').textContent})`, &ev)
	if !strings.Contains(ev.Type, "troupe.example.orders.ShipmentFailed") || !strings.Contains(ev.Value, `"reason": "cannot ship to XX"`) || !strings.Contains(ev.Headers, "ce_id") {
		t.Errorf("the opened event: %+v", ev)
	}
	checkLayout(t, b, "compensated saga", 1280)
	b.screenshot(filepath.Join(shots, "compensated-1280.png"), 1280, 900)
	b.resize(390, 844)
	wait("the narrow diagram", `document.querySelector('#diagram-path svg.diagram.narrow')`)
	checkLayout(t, b, "compensated saga", 390)
	b.screenshot(filepath.Join(shots, "compensated-390.png"), 390, 844)
	b.open(base + "/#/")
	wait("the overview at 390 px", `document.querySelector('tr[data-id^="order-"]') && document.querySelector('#diagram svg.diagram.narrow')`)
	checkLayout(t, b, "overview", 390)
	b.screenshot(filepath.Join(shots, "overview-390.png"), 390, 844)
	b.resize(1280, 900)

	// The dead letter, replayed from the page: a dry run, a confirmation,
	// then the replay, which the coordinator records in the history.
	d := held.DeadLetters[0]
	b.open(base + "/#/sagas/ui-err")
	at := fmt.Sprintf("inventory/%d/%d", d.Partition, d.Offset)
	wait("ui-err's dead letter", `document.querySelector('#saga-deadletters [data-deadletter="`+at+`"] button[data-action="replay"]:not([disabled])')`)
	b.must(`document.querySelector('#saga-deadletters [data-deadletter="`+at+`"] button[data-action="replay"]').click()`, nil)
	wait("the dry run's confirmation", `document.querySelector('.confirm') && document.querySelector('.confirm').textContent.includes("dry run: would be replayed into orders.inventory.retry")`)
	b.screenshot(filepath.Join(shots, "replay-confirm-1280.png"), 1280, 900)
	var recovered saga.Instance
	if apiGet(t, base, "/api/sagas/ui-err", &recovered) && slices.ContainsFunc(recovered.History, func(e saga.Entry) bool { return e.Type == saga.EntryReplayed }) {
		t.Fatalf("the dry run replayed the dead letter: %+v", recovered.History)
	}
	b.must(`document.querySelector('button[data-confirm="replay"]').click()`, nil)
	wait("the replay's answer", `[...document.querySelectorAll('[role="status"]')].some((e) => e.textContent.includes("replayed into orders.inventory.retry"))`)
	// Settled: the DLQ's own record (the retry topic, as troupe dlq list
	// reads it) no longer has it outstanding.
	var dls DeadLetters
	if !apiGet(t, base, "/api/deadletters", &dls) {
		t.Fatal("GET /api/deadletters failed")
	}
	for _, s := range dls.Steps {
		for _, l := range s.Letters {
			if s.Step == "inventory" && l.Partition == d.Partition && l.Offset == d.Offset {
				t.Errorf("the dead letter %s is still outstanding in its DLQ after the replay: %+v", at, s)
			}
		}
	}
	deadline = time.Now().Add(90 * time.Second)
	for !(apiGet(t, base, "/api/sagas/ui-err", &recovered) && !slices.ContainsFunc(recovered.DeadLetters, func(x saga.DeadLetter) bool { return x.Offset == d.Offset && x.Partition == d.Partition })) {
		if time.Now().After(deadline) {
			var notice string
			b.must(`document.querySelector('#notice').textContent`, &notice)
			var retried Record
			apiGet(t, base, fmt.Sprintf("/api/records/orders.inventory.retry/%d/0", d.Partition), &retried)
			t.Fatalf("the dead letter %s is still outstanding 90 s after its replay (%s; the retry topic holds %+v): %+v", at, notice, retried, recovered)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := 0
	for _, e := range recovered.History {
		if e.Type == saga.EntryReplayed && e.Step == "inventory" && strings.Contains(e.Note, fmt.Sprintf("--partition %d --offset %d replayed", d.Partition, d.Offset)) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d DeadLetterReplayed entries for %s in ui-err's history, want 1: %+v", n, at, recovered.History)
	}
	wait("the replay in the page's history", `[...document.querySelectorAll('#history tr[data-entry]')].some((tr) => tr.children[1].textContent === "DeadLetterReplayed")`)
	b.screenshot(filepath.Join(shots, "replayed-1280.png"), 1280, 900)
	t.Logf("screenshots in %s", shots)
}

// checkLayout fails the test if the page is wider than the window, if a
// cell's text is clipped, or if a command breaks inside a flag and its
// value (in a command, a note or an error).
func checkLayout(t *testing.T, b *browser, page string, width int) {
	t.Helper()
	var got struct {
		Width   int
		Clipped []string
		Broken  []string
	}
	b.must(`({
		width: document.documentElement.scrollWidth,
		clipped: [...document.querySelectorAll('td, dd, dt, th, .what, .legend .key, .stat, h2, h3')].filter((e) => e.offsetParent && e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'auto').map((e) => e.tagName + ': ' + e.textContent.slice(0, 60)),
		broken: [...document.querySelectorAll('code.cmd span, .nowrap')].filter((s) => s.offsetParent && s.getClientRects().length > 1).map((s) => s.textContent),
	})`, &got)
	if got.Width > width {
		t.Errorf("%s at %d px: the page is %d px wide", page, width, got.Width)
	}
	for _, c := range got.Clipped {
		t.Errorf("%s at %d px: clipped %s", page, width, c)
	}
	for _, c := range got.Broken {
		t.Errorf("%s at %d px: the command breaks inside %q", page, width, c)
	}
}
