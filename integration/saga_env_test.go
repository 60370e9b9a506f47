package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/example/orders"
	"github.com/troupehq/troupe/pkg/topology"
)

// sagaEnv is the example saga deployed for one test the way users deploy
// it: its own copy of topology/orders.yaml (a unique app name and topic
// prefix, so tests never share groups or topics), the built-in registry as a
// process, topics applied with `troupe topics apply`, and each step as its
// own `troupe run` process.
type sagaEnv struct {
	t        *testing.T
	dir      string
	file     string // the test's topology file
	topo     *topology.Topology
	registry string // URL
	brokers  []string
	serde    *avro.Serde
	cl       *kgo.Client
	procs    []*troupeProc

	// For a secured cluster: env is added to every troupe process's
	// environment (TROUPE_TLS_*, TROUPE_SASL_*), opts to every test client.
	env     []string
	opts    []kgo.Opt
	regProc *troupeProc // the registry
	// restart, if set, is asked about a process that exited on its own
	// and reports whether it restarted it (as an orchestrator would).
	restart func(*troupeProc) bool
}

// client is a test client of the env's brokers with opts.
func (e *sagaEnv) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	return newClient(e.t, e.brokers, append(slices.Clone(e.opts), opts...)...)
}

// alive fails the test if a process it started has exited, unless restart
// restarted it.
func (e *sagaEnv) alive() {
	e.t.Helper()
	for _, p := range e.procs {
		if p.Exited() && !p.stopped {
			if e.restart != nil && e.restart(p) {
				continue
			}
			e.t.Fatalf("process %s exited: %v\n%s", p.name, p.err, tail(p.log.String(), 20))
		}
	}
}

// prefixTopics renames the business topics of a topology file (the names
// under topics:) to prefix+name.
func prefixTopics(yaml, prefix string) string {
	lines := strings.Split(yaml, "\n")
	inTopics := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "topics:"):
			inTopics = true
		case l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#"):
			inTopics = false
		case inTopics && strings.HasPrefix(strings.TrimSpace(l), "- name: "):
			lines[i] = strings.Replace(l, "- name: ", "- name: "+prefix, 1)
		}
	}
	return strings.Join(lines, "\n")
}

// newSagaEnv deploys the saga with deadline (empty: the file's 30 s) and
// edits, pairs of (old, new) text replaced in the topology file, on the
// shared test broker.
func newSagaEnv(t *testing.T, deadline string, edits ...string) *sagaEnv {
	t.Helper()
	return newSagaEnvOn(t, kafkaharness.Brokers(), deadline, edits...)
}

// newSagaEnvOn is newSagaEnv on the given brokers.
func newSagaEnvOn(t *testing.T, brokers []string, deadline string, edits ...string) *sagaEnv {
	t.Helper()
	return newSagaEnvWith(t, &sagaEnv{brokers: brokers}, deadline, edits...)
}

// newSagaEnvWith is newSagaEnv on base's brokers, with its env and opts.
func newSagaEnvWith(t *testing.T, base *sagaEnv, deadline string, edits ...string) *sagaEnv {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	src, err := os.ReadFile("../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.Replace(string(src), "app: orders", "app: it"+id, 1)
	yaml = prefixTopics(yaml, "t"+id+"-")
	if deadline != "" {
		yaml = strings.Replace(yaml, "deadline: 30s", "deadline: "+deadline, 1)
	}
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(yaml, edits[i]) {
			t.Fatalf("topology edit: %q is not in the file", edits[i])
		}
		yaml = strings.Replace(yaml, edits[i], edits[i+1], 1)
	}
	e := base
	e.t, e.dir = t, t.TempDir()
	e.file = filepath.Join(e.dir, "orders.yaml")
	if err := os.WriteFile(e.file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if e.topo, err = topology.Load(e.file); err != nil {
		t.Fatalf("test topology: %v\n%s", err, yaml)
	}

	regAddr := freeAddr(t)
	_, port, _ := strings.Cut(regAddr, ":")
	e.registry = "http://" + regAddr
	e.regProc = startTroupeEnv(t, "registry", e.env, "registry", "--port", port, "--topic", "_schemas-"+id, "--brokers", e.brokerList())
	eventually(t, 60*time.Second, "registry answers", func() (bool, string) {
		resp, err := http.Get(e.registry + "/subjects")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := runTroupeEnv(t, ctx, e.env, "topics", "apply", "--topology", e.file, "--brokers", e.brokerList())
	if err != nil && strings.Contains(out, "still missing from the brokers' metadata") {
		// apply waits 30 s for created topics to show in every broker's
		// metadata; on a machine shared with other work (a load of 50 on
		// 2 cores) a three-node cluster took longer. Applying again is
		// what an operator would do: it creates nothing and waits again.
		t.Logf("troupe topics apply: created topics not visible yet; applying again\n%s", tail(out, 3))
		out, err = runTroupeEnv(t, ctx, e.env, "topics", "apply", "--topology", e.file, "--brokers", e.brokerList())
	}
	if err != nil {
		t.Fatalf("troupe topics apply: %v\n%s", err, out)
	}

	rc, err := avro.NewRegistryClient(e.registry)
	if err != nil {
		t.Fatal(err)
	}
	e.serde = avro.NewSerde(rc, avro.AutoRegister(true))
	if err := orders.Register(e.serde); err != nil {
		t.Fatal(err)
	}
	e.cl = e.client(kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	return e
}

// brokerList is the env's brokers for --brokers.
func (e *sagaEnv) brokerList() string { return strings.Join(e.brokers, ",") }

// startStep starts one replica of a step (or the coordinator, name
// "coordinator") as a `troupe run` process with its own state dir.
func (e *sagaEnv) startStep(name, replica string, extra ...string) *troupeProc {
	e.t.Helper()
	addr := freeAddr(e.t)
	args := []string{"run", "--topology", e.file, "--registry", e.registry, "--http", addr, "--brokers", e.brokerList(),
		"--state-dir", filepath.Join(e.dir, "state", name+"-"+replica)}
	if name == "coordinator" {
		args = append(args, "--coordinator", e.topo.Saga)
	} else {
		args = append(args, "--step", name)
	}
	p := startTroupeEnv(e.t, name+"-"+replica, e.env, append(args, extra...)...)
	p.http = "http://" + addr
	e.procs = append(e.procs, p)
	return p
}

// placeOrders produces one order per id with the wanted outcome.
func (e *sagaEnv) placeOrders(ctx context.Context, want map[string]orders.Outcome) {
	e.t.Helper()
	trigger, _ := e.topo.TopicOf(e.topo.Trigger)
	var recs []*kgo.Record
	for id, o := range want {
		rec, err := orders.Record(ctx, e.serde, trigger, orders.NewOrder(id, o, time.Now()), "integration-test")
		if err != nil {
			e.t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce %d orders: %v", len(recs), err)
	}
}

// chains reads every business topic from the start (read_committed) until
// done reports true for the chains so far, or the timeout passes. A chain is
// an order's event types (short names) in the order read per topic.
func (e *sagaEnv) chains(ctx context.Context, timeout time.Duration, done func(map[string][]string) bool) map[string][]string {
	e.t.Helper()
	var topics []string
	for _, tp := range e.topo.Topics {
		topics = append(topics, tp.Name)
	}
	cl := e.client(kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	out := map[string][]string{}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !done(out) {
		e.alive()
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) {
			typ, _ := event.Header(r, event.HeaderType)
			out[string(r.Key)] = append(out[string(r.Key)], e.topo.ShortName(typ))
		})
	}
	return out
}

func orderIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}
