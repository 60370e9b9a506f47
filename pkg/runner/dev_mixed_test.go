package runner

import (
	"context"
	"strconv"
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
	g := &Globals{Brokers: "127.0.0.1:" + strconv.Itoa(o.KafkaPort), Registry: "http://127.0.0.1:" + strconv.Itoa(o.RegistryPort), Log: zerolog.Nop()}
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
