// Package steptest runs a step against an in-process Kafka (franz-go's
// kfake) so that a step's handlers can be tested without a broker: send
// events, read what the step emits, read an instance's state, restart the
// step to check what survives.
//
//	serde := avro.NewSerde(steptest.NewRegistry())
//	_ = orders.Register(serde)
//	d, err := steptest.Start(orders.PaymentStep("orders", "orders"), serde, steptest.Topics("payments"))
//	if err != nil { t.Fatal(err) }
//	defer d.Close()
//	_, _ = d.Send("orders", "o-1", orders.OrderPlaced{OrderID: "o-1", AmountCents: 500})
//	out, err := d.Next("payments") // out.Value.(orders.PaymentAuthorized)
//
// The step runs for real (exactly-once by default, a state store in a
// temporary dir, the changelog in kfake), only faster: a 10 ms commit
// interval.
package steptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/state"
	"github.com/troupehq/troupe/pkg/step"
)

// Timeout bounds how long Next and State wait.
const Timeout = 10 * time.Second

// Option configures Start.
type Option func(*options)

type options struct {
	partitions int32
	guarantee  step.Guarantee
	logger     zerolog.Logger
	topics     []string
	saga       *step.Saga
	registerer prometheus.Registerer
	retry      *step.RetryPolicy
	tracing    trace.TracerProvider
}

// Topics creates the topics the step emits to (its inputs are created
// anyway). A step that emits to a topic that does not exist fails, as it
// would in production.
func Topics(names ...string) Option {
	return func(o *options) { o.topics = append(o.topics, names...) }
}

// Partitions sets the partition count of every topic; default 1.
func Partitions(n int32) Option { return func(o *options) { o.partitions = n } }

// Guarantee sets the step's guarantee; default step.ExactlyOnce.
func Guarantee(g step.Guarantee) Option { return func(o *options) { o.guarantee = g } }

// Logger sets the step's logger; default none.
func Logger(l zerolog.Logger) Option { return func(o *options) { o.logger = l } }

// Saga runs the step as part of a saga (step.Config.Saga): its ended topic
// and its ack topic are created, and the runtime keeps the saga rules.
func Saga(sc step.Saga) Option {
	return func(o *options) {
		o.saga = &sc
		o.topics = append(o.topics, sc.EndedTopic)
		if sc.AckTopic != "" {
			o.topics = append(o.topics, sc.AckTopic)
		}
	}
}

// Registerer registers the step's metrics with reg; default nowhere.
func Registerer(reg prometheus.Registerer) Option {
	return func(o *options) { o.registerer = reg }
}

// Tracing traces the step with tp (step.Config.Tracing), e.g. an SDK
// provider with tracetest's in-memory exporter; default none.
func Tracing(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracing = tp }
}

// Driver is a step running on an in-process cluster.
type Driver struct {
	s     step.Definition
	codec step.Codec
	opts  options
	c     *kfake.Cluster
	kcfg  kafka.Config
	cl    *kgo.Client
	dir   string

	mu      sync.Mutex
	readers map[string]*kgo.Client
	rt      *step.Runtime
	cancel  context.CancelFunc
	done    chan error
}

// Start starts a cluster, creates the step's inputs, and runs the step
// until it is ready.
func Start(s step.Definition, codec step.Codec, opts ...Option) (*Driver, error) {
	o := options{partitions: 1, logger: zerolog.Nop()}
	for _, opt := range opts {
		opt(&o)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(int(o.partitions)))
	if err != nil {
		return nil, fmt.Errorf("steptest: start kfake: %w", err)
	}
	d := &Driver{s: s, codec: codec, opts: o, c: c, readers: map[string]*kgo.Client{}}
	d.kcfg = kafka.Config{Brokers: c.ListenAddrs(), Logger: zerolog.Nop()}
	if d.dir, err = os.MkdirTemp("", "steptest-"); err != nil {
		c.Close()
		return nil, err
	}
	d.cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		d.Close()
		return nil, err
	}
	adm := kadm.NewClient(d.cl)
	for _, t := range append(s.Inputs(), o.topics...) {
		if _, err := adm.CreateTopic(context.Background(), o.partitions, 1, nil, t); err != nil {
			d.Close()
			return nil, fmt.Errorf("steptest: create topic %s: %w", t, err)
		}
	}
	if err := d.run(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) run() error {
	rt, err := step.NewRuntime(d.s, step.Config{
		Kafka:          d.kcfg,
		Codec:          d.codec,
		StateDir:       d.dir,
		Guarantee:      d.opts.guarantee,
		CommitInterval: 10 * time.Millisecond,
		Logger:         d.opts.logger,
		Saga:           d.opts.saga,
		Registerer:     d.opts.registerer,
		Retry:          d.opts.retryPolicy(),
		Tracing:        d.opts.tracing,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	d.mu.Lock()
	d.rt, d.cancel, d.done = rt, cancel, done
	d.mu.Unlock()

	deadline := time.Now().Add(Timeout)
	for {
		if ok, _ := rt.Ready(); ok && len(rt.Partitions()) == int(d.opts.partitions) {
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("steptest: step stopped at start: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_, why := rt.Ready()
			return fmt.Errorf("steptest: step not ready after %s: %s", Timeout, why)
		}
	}
}

// stop stops the step cleanly and returns Run's error.
func (d *Driver) stop() error {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.cancel, d.done = nil, nil
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return <-done
}

// Restart stops the step cleanly and starts it again on the same state dir,
// as a redeploy would.
func (d *Driver) Restart() error {
	if err := d.stop(); err != nil {
		return err
	}
	return d.run()
}

// Runtime is the running step, for its readiness and metrics.
func (d *Driver) Runtime() *step.Runtime {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rt
}

// Brokers are the in-process cluster's addresses.
func (d *Driver) Brokers() []string { return d.kcfg.Brokers }

// Close stops the step and the cluster and removes the state dir, and
// returns the error the step stopped with, if any.
func (d *Driver) Close() error {
	err := d.stop()
	d.mu.Lock()
	for _, r := range d.readers {
		r.Close()
	}
	d.readers = nil
	d.mu.Unlock()
	if d.cl != nil {
		d.cl.Close()
	}
	d.c.Close()
	return errors.Join(err, os.RemoveAll(d.dir))
}

// Send produces ev to topic with key (the instance id) and fresh metadata,
// which it returns.
func (d *Driver) Send(topic, key string, ev any) (event.Metadata, error) {
	typ, err := d.codec.TypeName(ev)
	if err != nil {
		return event.Metadata{}, err
	}
	v, err := d.codec.Encode(context.Background(), topic, ev)
	if err != nil {
		return event.Metadata{}, err
	}
	m := event.New(typ, "steptest", key)
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: v, Headers: m.Headers()}
	if err := d.cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		return m, fmt.Errorf("steptest: send to %s: %w", topic, err)
	}
	return m, nil
}

// Output is one event the step emitted.
type Output struct {
	Key   string
	Meta  event.Metadata
	Value any // a value of the Go type registered for its schema
}

// Next returns the next event on topic (read_committed: only what the step
// committed), waiting up to Timeout.
func (d *Driver) Next(topic string) (Output, error) {
	rec, err := d.nextRecord(topic)
	if err != nil {
		return Output{}, err
	}
	m, err := event.FromRecord(rec)
	if err != nil {
		return Output{}, err
	}
	_, v, err := d.codec.Decode(context.Background(), rec.Value)
	if err != nil {
		return Output{}, fmt.Errorf("steptest: decode %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	return Output{Key: string(rec.Key), Meta: m, Value: v}, nil
}

// State returns the committed state of instance key of the step run by d,
// read from the step's changelog, and false if it has none.
func State[S any](d *Driver, key string) (S, bool, error) {
	var s S
	topic := d.s.Name() + ".changelog"
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	// Under at-least-once an output is visible before the interval that
	// emitted it has written its changelog.
	if err := d.Runtime().WaitCommit(ctx); err != nil {
		return s, false, fmt.Errorf("steptest: wait for a commit: %w", err)
	}
	ends, err := kadm.NewClient(d.cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return s, false, err
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.kcfg.Brokers...), kgo.ConsumeTopics(topic), kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return s, false, err
	}
	defer cl.Close()
	want := string(state.InstanceKey(key))
	var latest []byte
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return s, false, fmt.Errorf("steptest: read %s: %w", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
			if !r.Attrs.IsControl() && string(r.Key) == want {
				latest = r.Value
			}
		})
	}
	if latest == nil {
		return s, false, nil
	}
	inst, err := state.DecodeInstance(latest)
	if err != nil || inst.State == nil {
		return s, false, err
	}
	return s, true, json.Unmarshal(inst.State, &s)
}
