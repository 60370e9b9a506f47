package runner

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/saga"
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

// renderDOM loads url in headless Chromium, lets its scripts run and its
// requests finish, and returns the resulting DOM.
func renderDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The flags keep Chromium off the network beyond the page: this
	// machine's network is closed, and a first run phones home otherwise.
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
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

// The UI in a real browser, over `troupe dev` with its demo load: the
// counts by status, a page of sagas, and one saga held by a dead letter
// (an ERR- order), with the command that settles it.
//
// The stack has a token (--auth-token-file): the page takes it from the
// address (#token=, beside the page's own route); without it, the page
// shows the API's 401 and a form for the token.
func TestDevUIInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack and a browser")
	}
	browser := chromium(t)
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), DemoRate: 20, SummaryEvery: time.Minute, Out: &syncBuffer{},
	}
	stop := startDevWithToken(t, o, uiToken)
	defer stop()
	waitReady(t, o.HTTP)
	base := "http://" + o.HTTP

	// An order that the inventory step dead-letters.
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
	rec, err := orders.Record(ctx, serde, orders.TopicOrders, orders.NewOrder("ui-err", orders.OutcomeDeadLettered, time.Now()), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var inst saga.Instance
	var st saga.Stats
	deadline := time.Now().Add(60 * time.Second)
	for !(apiGet(t, base, "/api/sagas/ui-err", &inst) && len(inst.DeadLetters) == 1 &&
		apiGet(t, base, "/api/sagas/stats", &st) && st.ByStatus[saga.Completed] > 0) {
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter for ui-err, or no completed saga, after 60 s: %+v %+v", inst, st)
		}
		time.Sleep(200 * time.Millisecond)
	}

	dom := renderDOM(t, browser, base+"/#/sagas/ui-err&token="+uiToken)
	d := inst.DeadLetters[0]
	for _, want := range []string{
		`data-status="COMPLETED"`, `data-status="RUNNING"`, // the counts by status
		`data-id="order-`,                                          // a row of the list
		`id="orphans"`,                                             // events that started no saga
		`<table id="history">`, `OrderPlaced`, `PaymentAuthorized`, // the saga's history
		`>orders/`, // an entry's topic/partition@offset
		"Outstanding dead letters (1)",
		"troupe dlq replay --step inventory --partition " + strconv.Itoa(int(d.Partition)) + " --offset " + strconv.FormatInt(d.Offset, 10),
		"warehouse system unavailable",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page has no %q", want)
		}
	}
	if strings.Contains(dom, `id="banner" role="alert">`) && !strings.Contains(dom, `id="banner" role="alert" hidden`) {
		t.Errorf("the page shows an error banner")
	}
	if strings.Contains(dom, `id="token-form"`) {
		t.Errorf("with #token=: the page asks for the token")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	dom = renderDOM(t, browser, base+"/")
	for _, want := range []string{`id="token-form"`, "This troupe API requires a token", "HTTP 401"} {
		if !strings.Contains(dom, want) {
			t.Errorf("without a token: the page has no %q\n%s", want, dom)
		}
	}
}
