package runner

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/saga"
)

// A `troupe run --coordinator` beside `troupe dev` (issue 16): it takes
// part of dev's partitions, and both APIs still answer for the whole saga.
func TestDevBesideARunCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	o := DevOptions{
		KafkaPort: freePort(t), RegistryPort: freePort(t), HTTP: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		DataDir: t.TempDir(), DemoRate: 20, SummaryEvery: time.Minute, Out: &syncBuffer{},
	}
	stop := startDev(t, o)
	defer stop()
	waitReady(t, o.HTTP)
	dev := "http://" + o.HTTP

	peerHTTP := "127.0.0.1:" + strconv.Itoa(freePort(t))
	logs := &syncBuffer{}
	g := &Globals{Brokers: "127.0.0.1:" + strconv.Itoa(o.KafkaPort), Registry: "http://127.0.0.1:" + strconv.Itoa(o.RegistryPort), Log: zerolog.New(logs).Level(zerolog.InfoLevel)}
	app := App{Name: "troupe", Version: "test", Types: orders.Register, Steps: orders.Steps}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, app, g, RunOptions{Topology: "../../topology/orders.yaml", Coordinator: "order-fulfillment", StateDir: t.TempDir(), HTTP: peerHTTP})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run --coordinator: %v", err)
		}
		checkLogKeys(t, logs.String())
	}()
	peer := "http://" + peerHTTP

	deadline := time.Now().Add(90 * time.Second)
	for {
		var ds, ps, dl saga.Stats
		okD := apiGet(t, dev, "/api/sagas/stats", &ds)
		okP := apiGet(t, peer, "/api/sagas/stats", &ps)
		okL := apiGet(t, peer, "/api/sagas/stats?scope=local", &dl)
		total := func(st saga.Stats) (n int) {
			for _, v := range st.ByStatus {
				n += v
			}
			return n
		}
		if okD && okP && okL && len(dl.Partitions) > 0 && len(dl.Partitions) < 8 && len(ds.Partitions) == 8 && total(ds) > 0 && total(ps) >= total(ds) {
			t.Logf("dev %v, peer %v, the peer serves %v", ds.ByStatus, ps.ByStatus, dl.Partitions)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s: dev %v %+v, peer %v %+v, peer's own partitions %v", okD, ds, okP, ps, dl.Partitions)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// An instance in either process's partitions, from dev.
	var page saga.Page
	if !apiGet(t, peer, "/api/sagas?limit=50", &page) || len(page.Items) == 0 {
		t.Fatal("no sagas listed by the peer")
	}
	for _, it := range page.Items {
		var inst saga.Instance
		if !apiGet(t, dev, "/api/sagas/"+it.ID, &inst) || inst.ID != it.ID {
			t.Errorf("dev cannot give %s", it.ID)
		}
	}
}

// checkLogKeys fails on a JSON log line with a key twice (the runner and
// the runtime both adding app, say): JSON parsers keep one or refuse the
// line.
func checkLogKeys(t *testing.T, logs string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) < 3 {
		t.Fatalf("%d log lines: %q", len(lines), logs)
	}
	for _, line := range lines {
		dec := json.NewDecoder(strings.NewReader(line))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("log line is not a JSON object: %s", line)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("log line %s: %v", line, err)
			}
			key := tok.(string)
			if seen[key] {
				t.Fatalf("log line has %q twice: %s", key, line)
			}
			seen[key] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("log line %s: %v", line, err)
			}
		}
	}
}
