package saga_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/saga"
	"github.com/troupehq/troupe/pkg/step"
)

// startPeer runs a second coordinator of d's saga in its group, with Kafka
// client id clientID, until the test ends or stop is called; it returns its
// store once the two coordinators split the partitions.
func startPeer(t *testing.T, d *coordDriver, clientID string) (store *saga.Store, stop func()) {
	t.Helper()
	c := saga.NewCoordinator(d.topo, d.serde, prometheus.NewRegistry())
	rt, err := step.NewRuntime(c.Step(), step.Config{
		Kafka:    kafka.Config{Brokers: d.Brokers(), ClientID: clientID, Logger: zerolog.Nop()},
		Codec:    d.serde,
		StateDir: t.TempDir(), CommitInterval: 10 * time.Millisecond, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once atomic.Bool
	stop = func() {
		if once.CompareAndSwap(false, true) {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("peer coordinator: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(30 * time.Second)
	for !(len(rt.Partitions()) == 1 && len(d.Runtime().Partitions()) == 1) {
		if ok, _ := rt.Ready(); time.Now().After(deadline) {
			t.Fatalf("partitions not split after 30 s: peer %v (ready %v), first %v", rt.Partitions(), ok, d.Runtime().Partitions())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for ok, _ := rt.Ready(); !ok; ok, _ = rt.Ready() {
		time.Sleep(20 * time.Millisecond)
	}
	return saga.NewStore(rt, d.topo), stop
}

// get GETs url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Two coordinators of one saga, as a `troupe run --coordinator` beside
// `troupe dev`: a coordinator that answers alone refuses to count half the
// saga and says why; one that merges with its peers names a peer that does
// not advertise its API, or does not answer, and what to do; with every
// peer advertised and up, stats count every instance once.
func TestClusterOfMixedCoordinators(t *testing.T) {
	d := startCoordinator(t)
	ids := []string{"m-a", "m-b", "m-c", "m-d", "m-e", "m-f"}
	for _, id := range ids {
		d.send(id, "OrderPlaced", "PaymentDeclined")
	}
	for _, id := range ids {
		d.instance(id, saga.Compensated)
	}
	ghosts := []string{"g-1", "g-2", "g-3", "g-4", "g-5"}
	for _, id := range ghosts {
		d.send(id, "ShipmentScheduled")
	}
	eventually(t, "the orphans kept", func() (bool, string) {
		st, err := d.store.Stats(t.Context())
		return err == nil && st.Orphans == len(ghosts), fmt.Sprintf("%+v %v", st, err)
	})
	adm := kadm.NewClient(mustClient(t, d.Brokers()))
	group := d.topo.CoordinatorGroup()

	// A lone store (what troupe dev mounted) beside a peer.
	_, stop := startPeer(t, d, "troupe")
	lone := api.New(prometheus.NewRegistry(), zerolog.Nop())
	saga.Mount(lone, d.store, nil)
	loneSrv := httptest.NewServer(lone.Handler())
	defer loneSrv.Close()
	if code, body := get(t, loneSrv.URL+"/api/sagas/stats"); code != 503 || !strings.Contains(body, group) || !strings.Contains(body, "troupe run --coordinator") {
		t.Errorf("lone store's stats beside a peer: %d %s; want 503 naming the group and the fix", code, body)
	}
	if code, body := get(t, loneSrv.URL+"/api/sagas?limit=100"); code != 503 {
		t.Errorf("lone store's list beside a peer: %d %s; want 503", code, body)
	}

	// A cluster beside a peer that advertises no API.
	var selfURL string
	mine := api.New(prometheus.NewRegistry(), zerolog.Nop())
	mineSrv := httptest.NewServer(mine.Handler())
	defer mineSrv.Close()
	selfURL = mineSrv.URL
	cluster := saga.NewCluster(d.store, selfURL, group, adm)
	saga.Mount(mine, cluster, cluster)
	eventually(t, "the unadvertised peer named", func() (bool, string) {
		code, body := get(t, mineSrv.URL+"/api/sagas/stats")
		return code == 503 && strings.Contains(body, `held by the member with client id \"troupe\"`) && strings.Contains(body, "--advertise-http"), body
	})
	stop()

	// A peer that advertises its API: the stats merge; then it stops
	// answering HTTP (its Kafka side still up): the error names it.
	// The peer's API requires a token, which the cluster sends.
	peerMux := api.New(prometheus.NewRegistry(), zerolog.Nop())
	peerMux.RequireToken(auth.Tokens{Write: "peer-token-41d7"})
	cluster.SendToken("peer-token-41d7")
	peerSrv := httptest.NewServer(peerMux.Handler())
	defer peerSrv.Close()
	peerStore, _ := startPeer(t, d, saga.ClientID(peerSrv.URL))
	peerCluster := saga.NewCluster(peerStore, peerSrv.URL, group, adm)
	saga.Mount(peerMux, peerCluster, peerCluster)
	eventually(t, "merged stats", func() (bool, string) {
		code, body := get(t, mineSrv.URL+"/api/sagas/stats")
		var st saga.Stats
		_ = json.Unmarshal([]byte(body), &st)
		return code == 200 && st.ByStatus[saga.Compensated] == len(ids) && st.Orphans == len(ghosts) && len(st.Partitions) == 2, body
	})
	// Lists merge across the two: sagas newest first, orphans each once,
	// a page of 2 at a time.
	var listed, orphaned []string
	for cursor, pages := "", 0; pages == 0 || cursor != ""; pages++ {
		var page saga.Page
		if code, body := get(t, mineSrv.URL+"/api/sagas?limit=2&cursor="+cursor); code != 200 || json.Unmarshal([]byte(body), &page) != nil || pages > len(ids) {
			t.Fatalf("merged list page %d: %d %s", pages, code, body)
		}
		for _, it := range page.Items {
			listed = append(listed, it.ID)
		}
		cursor = page.Next
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(listed, want) {
		t.Errorf("merged list %v, want %v (newest first)", listed, want)
	}
	for cursor, pages := "", 0; pages == 0 || cursor != ""; pages++ {
		var page saga.OrphanPage
		if code, body := get(t, mineSrv.URL+"/api/orphans?limit=2&cursor="+cursor); code != 200 || json.Unmarshal([]byte(body), &page) != nil || pages > len(ghosts) {
			t.Fatalf("merged orphans page %d: %d %s", pages, code, body)
		}
		for _, o := range page.Items {
			orphaned = append(orphaned, o.ID)
		}
		cursor = page.Next
	}
	slices.Sort(orphaned)
	if !slices.Equal(orphaned, ghosts) {
		t.Errorf("merged orphans %v, want %v", orphaned, ghosts)
	}

	peerSrv.Close()
	if code, body := get(t, mineSrv.URL+"/api/sagas/stats"); code != 503 || !strings.Contains(body, peerSrv.URL) || !strings.Contains(body, "did not answer") {
		t.Errorf("stats with the peer's API down: %d %s; want 503 naming %s", code, body, peerSrv.URL)
	}
}

func mustClient(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// eventually waits up to 30 s for cond, failing with its last message.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30 s: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
