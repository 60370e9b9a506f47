package step

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/pkg/event"
	"github.com/troupehq/troupe/pkg/tracing"
	"github.com/troupehq/troupe/pkg/tracing/tracingtest"
)

// relayStep handles Counted from "counted": it emits Other to "others"
// and, for i-traced, also after a 10 ms timer; it fails the first call
// for i-retry; it records the trace id each call sees.
func relayStep(app string, traceIDs *sync.Map) *Step[counter] {
	var failedOnce sync.Once
	s := New[counter](app, "relay", Inputs("counted"))
	Handle(s, func(c *Context[counter], ev Counted) error {
		traceIDs.Store(c.Key(), c.TraceID())
		if c.Key() == "i-retry" {
			fail := false
			failedOnce.Do(func() { fail = true })
			if fail {
				return errors.New("first attempt fails")
			}
		}
		if c.Key() == "i-traced" {
			if err := c.After(10*time.Millisecond, "later", "others", Other{X: "later"}); err != nil {
				return err
			}
		}
		return c.Emit("others", Other{X: c.Key()})
	})
	return s
}

// TestTraceAcrossSteps runs two traced steps, count (ticks -> counted) and
// relay (counted -> others), with the SDK's in-memory exporter: each
// handler call is a span between kotel's receive and publish spans, one
// instance's spans are one trace across both steps, and the outputs carry
// the trace on.
func TestTraceAcrossSteps(t *testing.T) {
	e := newEnv(t, 2)
	e.createTopic("others")
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	var traceIDs sync.Map
	cfgA, cfgB := e.config(t.TempDir(), ExactlyOnce), e.config(t.TempDir(), ExactlyOnce)
	cfgA.Tracing, cfgB.Tracing = tp, tp
	cfgB.Retry = RetryPolicy{InitialBackoff: 10 * time.Millisecond, Jitter: -1}
	a, b := countStep(e.app), relayStep(e.app, &traceIDs)
	start(t, a, cfgA)
	start(t, b, cfgB)

	// i-traced comes with a traceparent (its producer traced), i-plain and
	// i-retry without.
	rootCtx, root := tp.Tracer("test").Start(context.Background(), "test publish", trace.WithSpanKind(trace.SpanKindProducer))
	traced := e.tick("ticks", "i-traced", 1, event.NewID())
	propagation.TraceContext{}.Inject(rootCtx, kotel.NewRecordCarrier(traced))
	root.End()
	recs := []*kgo.Record{traced, e.tick("ticks", "i-plain", 2, event.NewID()), e.tick("ticks", "i-retry", 3, event.NewID())}
	if err := e.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	outs := e.consume("others", 4, 60*time.Second)
	if len(outs) != 4 {
		t.Fatalf("%d records in others, want 4 (i-traced twice, i-plain, i-retry)", len(outs))
	}

	// Every span the outputs name has ended by now; the receive spans of
	// the last polls may still be open, so wait for what is asserted.
	var spans tracetest.SpanStubs
	byID := map[trace.SpanID]tracetest.SpanStub{}
	processOf := func(step, id string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range spans {
			if strings.HasPrefix(s.Name, e.app+"."+step+" process ") && attr(s, "troupe.saga_id") == id {
				out = append(out, s)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		spans = exp.GetSpans()
		clear(byID)
		for _, s := range spans {
			byID[s.SpanContext.SpanID()] = s
		}
		complete := len(processOf("relay", "i-retry")) == 2
		for _, id := range []string{"i-traced", "i-plain"} {
			complete = complete && len(processOf("count", id)) == 1 && len(processOf("relay", id)) == 1
		}
		for _, r := range outs {
			complete = complete && byID[spanOf(t, r).SpanID()].Name != ""
		}
		if complete || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	parent := func(s tracetest.SpanStub, name string, kind trace.SpanKind) tracetest.SpanStub {
		t.Helper()
		p, ok := byID[s.Parent.SpanID()]
		if !ok || p.Name != name || p.SpanKind != kind {
			t.Fatalf("span %q: parent %q (%v, found %v), want %q (%v)", s.Name, p.Name, p.SpanKind, ok, name, kind)
		}
		return p
	}
	one := func(ss []tracetest.SpanStub, what string) tracetest.SpanStub {
		t.Helper()
		if len(ss) != 1 {
			t.Fatalf("%d %s spans, want 1", len(ss), what)
		}
		return ss[0]
	}

	// i-traced: root -> ticks receive -> count process -> counted publish
	// -> counted receive -> relay process -> others publish (twice).
	want := root.SpanContext().TraceID()
	pa := one(processOf("count", "i-traced"), "count process of i-traced")
	if pa.Name != e.app+".count process Tick" || pa.SpanKind != trace.SpanKindConsumer {
		t.Errorf("count's span %q (%v), want %q, a consumer span", pa.Name, pa.SpanKind, e.app+".count process Tick")
	}
	if rcv := parent(pa, "ticks receive", trace.SpanKindConsumer); rcv.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Errorf("count's receive span is a child of %s, want the producer's span %s", rcv.Parent.SpanID(), root.SpanContext().SpanID())
	}
	pb := one(processOf("relay", "i-traced"), "relay process of i-traced")
	parent(parent(parent(pb, "counted receive", trace.SpanKindConsumer), "counted publish", trace.SpanKindProducer), pa.Name, trace.SpanKindConsumer)
	for _, s := range []tracetest.SpanStub{pa, pb} {
		if s.SpanContext.TraceID() != want {
			t.Errorf("span %q: trace %s, want the producer's %s", s.Name, s.SpanContext.TraceID(), want)
		}
	}
	if got, _ := traceIDs.Load("i-traced"); got != want.String() {
		t.Errorf("Context.TraceID() = %v, want %s", got, want)
	}

	// Each output carries the trace on: its traceparent is its publish
	// span's, a child of relay's call (the timer's output too: the timer
	// was set in that call).
	for _, r := range outs {
		sc := spanOf(t, r)
		pub, ok := byID[sc.SpanID()]
		if !ok || pub.Name != "others publish" || pub.SpanKind != trace.SpanKindProducer {
			t.Fatalf("output of %s names span %s (%q), want its others publish span", r.Key, sc.SpanID(), pub.Name)
		}
		if pp := byID[pub.Parent.SpanID()]; !strings.HasPrefix(pp.Name, e.app+".relay process ") || attr(pp, "troupe.saga_id") != string(r.Key) {
			t.Errorf("output of %s: its publish span's parent is %q, want relay's call for it", r.Key, pp.Name)
		}
		if string(r.Key) == "i-traced" && sc.TraceID() != want {
			t.Errorf("output of i-traced in trace %s, want %s", sc.TraceID(), want)
		}
	}

	// i-plain had no traceparent: its trace is the one derived from its
	// id, the same in both steps.
	derived := SagaSpanContext("i-plain")
	pp := one(processOf("count", "i-plain"), "count process of i-plain")
	if rcv := parent(pp, "ticks receive", trace.SpanKindConsumer); rcv.Parent.SpanID() != derived.SpanID() || !rcv.Parent.IsRemote() {
		t.Errorf("i-plain's receive span: parent %s (remote %v), want the derived %s", rcv.Parent.SpanID(), rcv.Parent.IsRemote(), derived.SpanID())
	}
	for _, s := range append(processOf("relay", "i-plain"), pp) {
		if s.SpanContext.TraceID() != derived.TraceID() {
			t.Errorf("i-plain's span %q: trace %s, want the derived %s", s.Name, s.SpanContext.TraceID(), derived.TraceID())
		}
	}

	// i-retry: a span per attempt, the failed one marked.
	var statuses []codes.Code
	for _, s := range processOf("relay", "i-retry") {
		statuses = append(statuses, s.Status.Code)
	}
	if len(statuses) != 2 || statuses[0] != codes.Error || statuses[1] == codes.Error {
		t.Errorf("i-retry's relay spans have statuses %v, want [Error, Unset]", statuses)
	}

	// Changelog records (state) are no part of a trace.
	for _, s := range spans {
		if strings.Contains(s.Name, "changelog") {
			t.Errorf("span %q: changelog records must not be traced", s.Name)
		}
	}
}

// TestTraceOff: without Config.Tracing an output's traceparent is its
// input's, unchanged, and Context.TraceID reads it.
func TestTraceOff(t *testing.T) {
	e := newEnv(t, 1)
	e.createTopic("others")
	var traceIDs sync.Map
	start(t, relayStep(e.app, &traceIDs), e.config(t.TempDir(), ExactlyOnce))
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	v, err := e.codec.Encode(context.Background(), "counted", Counted{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := event.New("troupe.test.Counted", "test", "i-plain")
	m.TraceParent = tp
	if err := e.cl.ProduceSync(context.Background(), &kgo.Record{Topic: "counted", Key: []byte("i-plain"), Value: v, Headers: m.Headers()}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	outs := e.consume("others", 1, 30*time.Second)
	if len(outs) != 1 {
		t.Fatalf("%d outputs, want 1", len(outs))
	}
	if got := headerValue(outs[0], event.HeaderTraceParent); got != tp {
		t.Errorf("output traceparent %q, want the input's %q", got, tp)
	}
	if got, _ := traceIDs.Load("i-plain"); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("Context.TraceID() = %v, want the input traceparent's", got)
	}
}

// spanOf is the span context in r's traceparent.
func spanOf(t *testing.T, r *kgo.Record) trace.SpanContext {
	t.Helper()
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), kotel.NewRecordCarrier(r)))
	if !sc.IsValid() {
		t.Fatalf("record %s of %s has no valid traceparent: %q", r.Key, r.Topic, headerValue(r, event.HeaderTraceParent))
	}
	return sc
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestTraceExportOTLP runs a step traced by package tracing, as troupe
// run is, exporting over OTLP/HTTP to a receiver in the test process:
// each handler call arrives as a span in its output's trace.
func TestTraceExportOTLP(t *testing.T) {
	rcv := tracingtest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL())
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	e := newEnv(t, 2)
	cfg := e.config(t.TempDir(), ExactlyOnce)
	p, err := tracing.FromEnv(context.Background(), tracing.Options{Service: "troupe-count", Registerer: cfg.Registerer, Logger: cfg.Logger})
	if err != nil || p == nil {
		t.Fatalf("FromEnv = %v, %v", p, err)
	}
	cfg.Tracing = p.TracerProvider()
	r := start(t, countStep(e.app), cfg)
	const n = 20
	e.produce(0, n, n)
	outs := e.consume("counted", n, 30*time.Second)
	if len(outs) != n {
		t.Fatalf("%d outputs, want %d", len(outs), n)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := map[string]tracingtest.Span{} // by span id
	for _, s := range rcv.Spans() {
		if s.Name == e.app+".count process Tick" {
			calls[s.SpanID] = s
		}
	}
	if len(calls) != n {
		t.Fatalf("received %d spans of count's calls, want %d", len(calls), n)
	}
	byID := map[string]tracingtest.Span{}
	for _, s := range rcv.Spans() {
		byID[s.SpanID] = s
	}
	for _, r := range outs {
		sc := spanOf(t, r)
		pub := byID[sc.SpanID().String()]
		call, ok := calls[pub.ParentID]
		if !ok || pub.Name != "counted publish" {
			t.Fatalf("output of %s: publish span %q whose parent is no call of count", r.Key, pub.Name)
		}
		if call.Service != "troupe-count" || call.Attrs["troupe.saga_id"] != string(r.Key) || call.TraceID != sc.TraceID().String() {
			t.Errorf("call span of %s: service %q, saga %q, trace %s; want troupe-count, %s, the output's %s", r.Key, call.Service, call.Attrs["troupe.saga_id"], call.TraceID, r.Key, sc.TraceID())
		}
	}
}

// TestTraceUnreachable: a step whose collector accepts connections and
// never answers handles its inputs as usual; the spans that cannot be
// exported are dropped and counted.
func TestTraceUnreachable(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+tracingtest.Silent(t))
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
	t.Setenv("OTEL_BSP_EXPORT_TIMEOUT", "300")
	e := newEnv(t, 2)
	cfg := e.config(t.TempDir(), ExactlyOnce)
	reg := prometheus.NewRegistry()
	p, err := tracing.FromEnv(context.Background(), tracing.Options{Registerer: reg, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracing = p.TracerProvider()
	const n, instances = 500, 50
	e.produce(0, n, instances)
	t0 := time.Now()
	r := start(t, countStep(e.app), cfg)
	// Had a span's End waited for the exporter, the ~1,500 spans (receive,
	// process, publish per input) would take 110 s: 4 per 300 ms export.
	deadline := time.Now().Add(60 * time.Second)
	for counterValue(t, r.rt.m.processed) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := counterValue(t, r.rt.m.processed); got != n {
		t.Fatalf("processed %v of %d inputs in 60 s with the collector unreachable", got, n)
	}
	t.Logf("%d inputs in %s with the collector silent", n, time.Since(t0).Round(time.Millisecond))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.Shutdown(ctx) // what is queued cannot be exported
	var dropped float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "troupe_trace_spans_dropped_total" {
			for _, m := range mf.GetMetric() {
				dropped += m.GetCounter().GetValue()
			}
		}
	}
	if dropped < n {
		t.Errorf("troupe_trace_spans_dropped_total = %v, want at least %d (a call span per input)", dropped, n)
	}
}

// BenchmarkHandlerSpan is what tracing adds to one handler call: off, a
// nil check; on, the input's receive span (kotel's fetch hooks) and the
// call's span, with an SDK provider that exports nothing.
//
//	go test ./pkg/step -run - -bench HandlerSpan -benchmem
func BenchmarkHandlerSpan(b *testing.B) {
	d := New[counter]("bench", "count", Inputs("ticks")).def
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			rt := &Runtime{}
			if on {
				tp := sdktrace.NewTracerProvider()
				defer func() { _ = tp.Shutdown(context.Background()) }()
				rt.tr = newTracer(tp, &d, []string{"ticks"}, Config{})
			}
			h := traceHooks{rt.tr}
			rec := &kgo.Record{Topic: "ticks", Key: []byte("i-1"), Offset: 1}
			j := &job{rec: rec, id: "i-1", name: "troupe.test.Tick", eventID: "e-1", cl: &call{}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if on {
					rec.Context = nil
					h.OnFetchRecordBuffered(rec)
					h.OnFetchRecordUnbuffered(rec, true)
				}
				_, span := rt.startSpan(ctx, j)
				rt.endSpan(span, j)
			}
		})
	}
}
