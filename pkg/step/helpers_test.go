package step

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/troupehq/troupe/pkg/avro"
	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/state"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Pebble's shared background goroutines outlive a closed DB.
		goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"),
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/vfs/errorfs.init"),
	)
}

// Test events.
type Tick struct {
	N int64 `avro:"n"`
}

type Counted struct {
	Count int64 `avro:"count"`
	N     int64 `avro:"n"`
}

type Other struct {
	X string `avro:"x"`
}

const (
	tickSchema    = `{"type":"record","name":"Tick","namespace":"troupe.test","fields":[{"name":"n","type":"long"}]}`
	countedSchema = `{"type":"record","name":"Counted","namespace":"troupe.test","fields":[{"name":"count","type":"long"},{"name":"n","type":"long"}]}`
	otherSchema   = `{"type":"record","name":"Other","namespace":"troupe.test","fields":[{"name":"x","type":"string"}]}`
)

// memRegistry is an in-memory avro.Registry.
type memRegistry struct {
	mu       sync.Mutex
	subjects map[string][]int
	texts    map[int]string
}

func (r *memRegistry) Register(_ context.Context, subject, schema string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, s := range r.texts {
		if s == schema {
			r.subjects[subject] = append(r.subjects[subject], id)
			return id, nil
		}
	}
	id := len(r.texts) + 1
	r.texts[id] = schema
	r.subjects[subject] = append(r.subjects[subject], id)
	return id, nil
}

func (r *memRegistry) Lookup(_ context.Context, subject, schema string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range r.subjects[subject] {
		if r.texts[id] == schema {
			return id, nil
		}
	}
	return 0, fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
}

func (r *memRegistry) SchemaByID(_ context.Context, id int) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.texts[id]; ok {
		return s, nil
	}
	return "", fmt.Errorf("id %d: %w", id, avro.ErrUnknownSchema)
}

func (r *memRegistry) Latest(_ context.Context, subject string) (int, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := r.subjects[subject]
	if len(ids) == 0 {
		return 0, "", fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
	}
	return ids[len(ids)-1], r.texts[ids[len(ids)-1]], nil
}

func newSerde(t testing.TB) *avro.Serde {
	t.Helper()
	s := avro.NewSerde(&memRegistry{subjects: map[string][]int{}, texts: map[int]string{}})
	for _, r := range []struct {
		zero   any
		schema string
	}{{Tick{}, tickSchema}, {Counted{}, countedSchema}, {Other{}, otherSchema}} {
		if err := s.Register(r.zero, r.schema); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// env is a kfake cluster with a codec and an input topic.
type env struct {
	t      testing.TB
	c      *kfake.Cluster
	kcfg   kafka.Config
	codec  *avro.Serde
	cl     *kgo.Client
	app    string
	nparts int32
}

func newEnv(t testing.TB, partitions int32, opts ...kfake.Opt) *env {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(int(partitions))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &env{t: t, c: c, codec: newSerde(t), app: "t" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"), nparts: partitions}
	e.kcfg = kafka.Config{Brokers: c.ListenAddrs(), Logger: zerolog.Nop()}
	e.cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cl.Close)
	e.createTopic("ticks")
	e.createTopic("counted")
	return e
}

func (e *env) createTopic(name string) {
	e.t.Helper()
	if _, err := kadm.NewClient(e.cl).CreateTopic(context.Background(), e.nparts, 1, nil, name); err != nil {
		e.t.Fatal(err)
	}
}

// produce sends ticks n0..n0+count-1, instance i%instances, with fresh ids.
func (e *env) produce(n0, count, instances int) {
	e.t.Helper()
	ctx := context.Background()
	rs := make([]*kgo.Record, 0, count)
	for n := n0; n < n0+count; n++ {
		rs = append(rs, e.tick("ticks", fmt.Sprintf("i-%03d", n%instances), int64(n), event.NewID()))
	}
	if err := e.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tick(topic, key string, n int64, id string) *kgo.Record {
	e.t.Helper()
	v, err := e.codec.Encode(context.Background(), topic, Tick{N: n})
	if err != nil {
		e.t.Fatal(err)
	}
	m := event.New("troupe.test.Tick", "test", key)
	m.ID = id
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: v, Headers: m.Headers()}
}

// reader reads topic from its start, read_committed.
func (e *env) reader(topic string) *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kcfg.Brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// consume reads topic (read_committed) from the start until want records
// arrived or the timeout passed, and returns them.
func (e *env) consume(topic string, want int, timeout time.Duration) []*kgo.Record {
	e.t.Helper()
	cl := e.reader(topic)
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// Anything beyond want would be a duplicate: give it a moment to show.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	cancel()
	return out
}

// config is a step config for e with a fresh state dir.
func (e *env) config(dir string, g Guarantee) Config {
	return Config{
		Kafka:          e.kcfg,
		Codec:          e.codec,
		StateDir:       dir,
		Guarantee:      g,
		CommitInterval: 50 * time.Millisecond,
		Registerer:     prometheus.NewRegistry(),
		Logger:         zerolog.New(zerolog.NewTestWriter(e.t)).Level(testLogLevel).With().Timestamp().Logger(),
	}
}

type counter struct {
	Count int64 `json:"count"`
}

// countStep counts ticks per instance and emits the running count; it
// consumes inputs, ticks if none.
func countStep(app string, inputs ...string) *Step[counter] {
	if len(inputs) == 0 {
		inputs = []string{"ticks"}
	}
	s := New[counter](app, "count", Inputs(inputs...))
	Handle(s, count)
	return s
}

// count is countStep's handler.
func count(c *Context[counter], ev Tick) error {
	st, _ := c.State()
	st.Count++
	c.SetState(st)
	return c.Emit("counted", Counted{Count: st.Count, N: ev.N})
}

// running is a runtime running in the background.
type running struct {
	rt     *Runtime
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, s Definition, cfg Config) *running {
	t.Helper()
	rt, err := NewRuntime(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- rt.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop cancels the runtime and returns Run's error. Idempotent.
func (r *running) stop() error {
	r.cancel()
	err, ok := <-r.done
	if ok {
		close(r.done)
	}
	return err
}

// waitReady waits until the runtime holds want active partitions.
func (r *running) waitActive(t testing.TB, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok, _ := r.rt.Ready(); ok && len(r.rt.activeTasks()) == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok, why := r.rt.Ready()
	t.Fatalf("not %d active partitions after %s: %d active, ready=%v %s", want, timeout, len(r.rt.activeTasks()), ok, why)
}

// counts reads every instance's count from the store in dir.
func counts(t testing.TB, dir, app string, partitions int32) map[string]int64 {
	t.Helper()
	s, err := state.Open(dir, state.Options{App: app, Step: "count"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[string]int64{}
	for p := range partitions {
		err := s.Scan(p, []byte{state.KindInstance}, func(k, v []byte) error {
			inst, err := state.DecodeInstance(v)
			if err != nil {
				return err
			}
			var c counter
			if err := json.Unmarshal(inst.State, &c); err != nil {
				return err
			}
			out[string(k[1:])] += c.Count
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// wantCounts is what counts should be after ticks 0..n-1 over instances.
func wantCounts(n, instances int) map[string]int64 {
	out := map[string]int64{}
	for i := range n {
		out[fmt.Sprintf("i-%03d", i%instances)]++
	}
	return out
}

func counterValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

var testLogLevel = func() zerolog.Level {
	if l, err := zerolog.ParseLevel(os.Getenv("TROUPE_TEST_LOG")); err == nil && l != zerolog.NoLevel {
		return l
	}
	return zerolog.WarnLevel
}()
