// Package tracing sets up OpenTelemetry tracing for a troupe process from
// the standard OTEL_* environment variables: spans exported over OTLP/HTTP
// when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// is set, nothing at all otherwise.
//
//	p, err := tracing.FromEnv(ctx, tracing.Options{Service: "troupe", Registerer: reg, Logger: log})
//	defer p.Shutdown(shutdownCtx) // nil-safe: p is nil when tracing is off
//	cfg := step.Config{..., Tracing: p.TracerProvider()}
//
// The spans themselves come from package step (one per handler call, see
// its trace.go) and from franz-go's kotel hooks (receive and publish).
//
// What is read from the environment: OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER
// (otlp or none), OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, the
// sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: parent-based
// always-on by default), the OTEL_EXPORTER_OTLP_[TRACES_]* variables of
// the OTLP/HTTP exporter (ENDPOINT, HEADERS, TIMEOUT, COMPRESSION,
// CERTIFICATE, CLIENT_CERTIFICATE and CLIENT_KEY; PROTOCOL: http/protobuf
// only, see otlp.go), and
// OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
// OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT for the batching.
//
// Tracing never holds up the work it traces: ending a span puts it on a
// bounded queue or, when the queue is full, drops it; a batch whose export
// fails (the collector unreachable, slow or refusing) is dropped too. Both
// are counted in troupe_trace_spans_dropped_total{reason}, exported spans
// in troupe_trace_spans_exported_total, and export failures are logged at
// most once a minute. (The SDK's BatchSpanProcessor drops uncounted, hence
// this package's own batcher.)
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/pkg/metrics"
)

// Options are what FromEnv cannot read from the environment.
type Options struct {
	// Service is the service.name of the spans unless OTEL_SERVICE_NAME
	// (or OTEL_RESOURCE_ATTRIBUTES) names one. Default "troupe".
	Service string
	// Registerer gets the troupe_trace_* metrics; nil registers them
	// nowhere.
	Registerer prometheus.Registerer
	// Logger gets export failures, at warn, at most once a minute.
	Logger zerolog.Logger
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
}

// Provider is a process's tracer provider. A nil *Provider is tracing
// off: its methods do nothing.
type Provider struct {
	tp *sdktrace.TracerProvider
	b  *batcher
}

// Enabled reports whether the environment turns tracing on: an OTLP
// endpoint is set (or OTEL_TRACES_EXPORTER=otlp), and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it off.
func Enabled(getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// FromEnv builds the Provider the environment asks for (see the package
// doc), or returns nil when tracing is off. It does not touch the
// network: an unreachable collector shows up as dropped spans, never as
// an error here.
func FromEnv(ctx context.Context, o Options) (*Provider, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := checkEnv(getenv); err != nil {
		return nil, err
	}
	if !Enabled(getenv) {
		return nil, nil
	}
	exp, err := newExporter(getenv)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (check the OTEL_EXPORTER_OTLP_* variables): %w", err)
	}
	bo, err := batchOptions(getenv)
	if err != nil {
		return nil, err
	}
	service := o.Service
	if service == "" {
		service = "troupe"
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("trace resource (check OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	b := newBatcher(exp, bo, newMetrics(o.Registerer), o.Logger, Endpoint(getenv))
	return &Provider{b: b, tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithResource(res))}, nil
}

// checkEnv refuses what troupe cannot do, naming the fix.
func checkEnv(getenv func(string) string) error {
	var errs []error
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "", "otlp", "none":
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: troupe exports traces over OTLP only (set it to otlp, or none to turn tracing off)", e))
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		switch p := strings.TrimSpace(getenv(k)); p {
		case "", "http/protobuf":
		case "http/json":
			errs = append(errs, fmt.Errorf("%s=%s: troupe exports OTLP as protobuf over HTTP, which every collector takes (set it to http/protobuf, or leave it unset)", k, p))
		default:
			errs = append(errs, fmt.Errorf("%s=%s: troupe exports OTLP over HTTP only (set it to http/protobuf, and the endpoint to the collector's HTTP port, usually 4318)", k, p))
		}
	}
	return errors.Join(errs...)
}

// Endpoint is the collector the environment names (getenv nil:
// os.Getenv), for log lines.
func Endpoint(getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	if e := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	if e := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); e != "" {
		return e
	}
	return "http://localhost:4318"
}

// batchOptions reads the OTEL_BSP_* variables, with the SDK's defaults.
func batchOptions(getenv func(string) string) (batchConfig, error) {
	c := batchConfig{queue: 2048, batch: 512, delay: 5 * time.Second, timeout: 30 * time.Second}
	var errs []error
	num := func(k string, dst *int) {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s=%s: want a positive integer", k, v))
				return
			}
			*dst = n
		}
	}
	ms := func(k string, dst *time.Duration) {
		n := int(*dst / time.Millisecond)
		num(k, &n)
		*dst = time.Duration(n) * time.Millisecond
	}
	num("OTEL_BSP_MAX_QUEUE_SIZE", &c.queue)
	num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &c.batch)
	ms("OTEL_BSP_SCHEDULE_DELAY", &c.delay)
	ms("OTEL_BSP_EXPORT_TIMEOUT", &c.timeout)
	c.batch = min(c.batch, c.queue)
	return c, errors.Join(errs...)
}

// TracerProvider is the provider for step.Config.Tracing: nil (no
// tracing) for a nil Provider.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil {
		return nil
	}
	return p.tp
}

// ProducerOpts are the client options that trace what a plain producer
// (troupe dev's demo load, troupe produce) sends: each record a publish
// span, its context in the record's traceparent, so a saga's trace starts
// at its trigger. None for a nil Provider.
func (p *Provider) ProducerOpts() []kgo.Opt {
	if p == nil {
		return nil
	}
	return []kgo.Opt{kgo.WithHooks(kotel.NewTracer(kotel.TracerProvider(p.tp), kotel.TracerPropagator(propagation.TraceContext{})))}
}

// Shutdown exports what is queued, within ctx, and stops. Spans ended
// after it are dropped. Nil-safe.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

type tracingMetrics struct {
	exported  prometheus.Counter
	queueFull prometheus.Counter
	failed    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *tracingMetrics {
	exported := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "trace", Name: "spans_exported_total",
		Help: "Spans the OTLP collector accepted.",
	}))
	dropped := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Subsystem: "trace", Name: "spans_dropped_total",
		Help: "Spans not exported, by reason: queue_full (ended while the export queue was full: the collector is slower than the spans come, or unreachable) or export_failed (in a batch the collector did not accept in time).",
	}, []string{"reason"}))
	return &tracingMetrics{exported: exported, queueFull: dropped.WithLabelValues("queue_full"), failed: dropped.WithLabelValues("export_failed")}
}

type batchConfig struct {
	queue, batch   int
	delay, timeout time.Duration
}

// batcher is the span processor: ending a span never waits on it.
type batcher struct {
	exp      sdktrace.SpanExporter
	cfg      batchConfig
	m        *tracingMetrics
	log      zerolog.Logger
	endpoint string

	queue chan sdktrace.ReadOnlySpan
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	failures  int // since the last log line; run only
	lastLog   time.Time
	lastError error
}

func newBatcher(exp sdktrace.SpanExporter, cfg batchConfig, m *tracingMetrics, log zerolog.Logger, endpoint string) *batcher {
	b := &batcher{
		exp: exp, cfg: cfg, m: m, log: log, endpoint: endpoint,
		queue: make(chan sdktrace.ReadOnlySpan, cfg.queue),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b
}

func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues s for export, or drops it if the queue is full.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case <-b.stop:
		return
	default:
	}
	select {
	case b.queue <- s:
	default:
		b.m.queueFull.Inc()
	}
}

// run batches the queue and exports, until stop; then it exports what is
// left.
func (b *batcher) run() {
	defer close(b.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, b.cfg.batch)
	t := time.NewTimer(b.cfg.delay)
	defer t.Stop()
	for {
		select {
		case s := <-b.queue:
			batch = append(batch, s)
			if len(batch) < b.cfg.batch {
				continue
			}
		case <-t.C:
		case ch := <-b.flush:
			batch = b.drain(batch)
			b.export(batch)
			batch = batch[:0]
			close(ch)
			continue
		case <-b.stop:
			b.export(b.drain(batch))
			return
		}
		b.export(batch)
		batch = batch[:0]
		t.Reset(b.cfg.delay)
	}
}

// drain appends what is queued to batch, without waiting, exporting
// full batches on the way.
func (b *batcher) drain(batch []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	for {
		select {
		case s := <-b.queue:
			batch = append(batch, s)
			if len(batch) >= b.cfg.batch {
				b.export(batch)
				batch = batch[:0]
			}
		default:
			return batch
		}
	}
}

// export sends batch, within the export timeout; a failed batch is
// dropped and counted.
func (b *batcher) export(batch []sdktrace.ReadOnlySpan) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
	err := b.exp.ExportSpans(ctx, batch)
	cancel()
	clear(batch)
	if err == nil {
		b.m.exported.Add(float64(len(batch)))
		return
	}
	b.m.failed.Add(float64(len(batch)))
	b.failures += len(batch)
	b.lastError = err
	if now := time.Now(); now.Sub(b.lastLog) >= time.Minute {
		b.log.Warn().Err(err).Str("endpoint", b.endpoint).Int("spans_dropped", b.failures).
			Msg("trace export failed; the spans are dropped (troupe_trace_spans_dropped_total) and the steps go on: check OTEL_EXPORTER_OTLP_ENDPOINT and that the collector is up")
		b.lastLog, b.failures = now, 0
	}
}

// ForceFlush exports what is queued now.
func (b *batcher) ForceFlush(ctx context.Context) error {
	ch := make(chan struct{})
	select {
	case b.flush <- ch:
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and stops the exporter, within ctx: an
// export still running then is cancelled.
func (b *batcher) Shutdown(ctx context.Context) error {
	b.once.Do(func() { close(b.stop) })
	var err error
	select {
	case <-b.done:
	case <-ctx.Done():
		err = fmt.Errorf("trace export at shutdown: %w", ctx.Err())
	}
	// The exporter's Shutdown cancels its requests in flight, so run
	// returns soon after.
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if e := b.exp.Shutdown(sctx); e != nil && err == nil {
		err = e
	}
	<-b.done
	return err
}
