package step

import (
	"context"
	"crypto/sha256"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupehq/troupe/pkg/event"
)

// Traces (OpenTelemetry), on when Config.Tracing is set. franz-go's kotel
// hooks do the Kafka side: a fetched input gets a "receive" span, child of
// the context in its traceparent header, and a produced event a "publish"
// span whose context replaces the record's traceparent. This file puts a
// span around each handler call between the two, child of the input's
// receive span (or, for an OnTimer handler, of the traceparent the timer
// was set with), whose context the call's outputs are published under:
//
//	orders publish (the producer of OrderPlaced)
//	└ orders receive (payment) └ payment process OrderPlaced
//	                             └ payments publish (PaymentAuthorized)
//	                               └ payments receive (inventory) └ inventory process PaymentAuthorized ...
//	└ orders receive (the coordinator) └ saga.order-fulfillment process OrderPlaced
//
// So one saga is one trace across steps and the coordinator. An input
// without a valid traceparent (a producer that does not trace) gets a
// remote parent derived from its instance id (SagaSpanContext): every step
// that reads an instance's untraced trigger puts it in the same trace.
//
// Off (Config.Tracing nil), no hook is installed and a handler call pays
// one nil check.

// tracer is a runtime's tracing; nil when off.
type tracer struct {
	kt   *kotel.Tracer
	tr   trace.Tracer // for OnTimer calls, which have no record
	prop propagation.TraceContext
	step string // the group, <app>.<step>
	// traced are the fetched topics whose records are handler inputs:
	// the inputs, the retry topic and watched topics, not the saga's
	// ended topic (the runtime applies SagaEnded itself).
	traced map[string]bool
}

// newTracer returns the tracing of a runtime of d consuming topics, nil
// when tp is.
func newTracer(tp trace.TracerProvider, d *definition, topics []string, cfg Config) *tracer {
	if tp == nil {
		return nil
	}
	t := &tracer{
		kt: kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(propagation.TraceContext{}),
			kotel.ConsumerGroup(d.group())),
		tr:     tp.Tracer("github.com/troupehq/troupe/pkg/step"),
		step:   d.group(),
		traced: make(map[string]bool, len(topics)),
	}
	for _, tp := range topics {
		if cfg.Saga == nil || tp != cfg.Saga.EndedTopic {
			t.traced[tp] = true
		}
	}
	return t
}

// traceOpts are the client options tracing needs: kotel's hooks, behind
// traceHooks' filter.
func (rt *Runtime) traceOpts() []kgo.Opt {
	if rt.tr == nil {
		return nil
	}
	return []kgo.Opt{kgo.WithHooks(traceHooks{rt.tr})}
}

// traceHooks passes kotel the records that belong in a trace: handler
// inputs, and outputs that carry a span context (a handler's) or a
// traceparent (a fired timer's event, a dead letter, an ack). Changelog
// records, which have neither, get no span.
type traceHooks struct{ t *tracer }

var (
	_ kgo.HookProduceRecordBuffered   = traceHooks{}
	_ kgo.HookProduceRecordUnbuffered = traceHooks{}
	_ kgo.HookFetchRecordBuffered     = traceHooks{}
	_ kgo.HookFetchRecordUnbuffered   = traceHooks{}
)

func (h traceHooks) OnProduceRecordBuffered(r *kgo.Record) {
	if !trace.SpanContextFromContext(r.Context).IsValid() {
		ctx := h.t.prop.Extract(r.Context, kotel.NewRecordCarrier(r))
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return
		}
		r.Context = ctx
	}
	h.t.kt.OnProduceRecordBuffered(r)
}

func (h traceHooks) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if trace.SpanFromContext(r.Context).IsRecording() {
		h.t.kt.OnProduceRecordUnbuffered(r, err)
	}
}

func (h traceHooks) OnFetchRecordBuffered(r *kgo.Record) {
	if !h.t.traced[r.Topic] {
		return
	}
	if r.Context == nil {
		r.Context = context.Background()
	}
	if !trace.SpanContextFromContext(h.t.prop.Extract(r.Context, kotel.NewRecordCarrier(r))).IsValid() {
		if id := instanceOf(r); id != "" {
			r.Context = trace.ContextWithRemoteSpanContext(r.Context, SagaSpanContext(id))
		}
	}
	h.t.kt.OnFetchRecordBuffered(r)
}

func (h traceHooks) OnFetchRecordUnbuffered(r *kgo.Record, polled bool) {
	if h.t.traced[r.Topic] {
		h.t.kt.OnFetchRecordUnbuffered(r, polled)
	}
}

// startSpan starts the span of job j's handler call, under ctx, the
// call's context; off, it returns ctx and nil.
func (rt *Runtime) startSpan(ctx context.Context, j *job) (context.Context, trace.Span) {
	if rt.tr == nil {
		return ctx, nil
	}
	return rt.tr.start(ctx, j)
}

func (t *tracer) start(ctx context.Context, j *job) (context.Context, trace.Span) {
	var span trace.Span
	if j.timer != nil || j.rec == nil {
		parent := t.prop.Extract(context.Background(), propagation.MapCarrier{event.HeaderTraceParent: j.cl.meta.TraceParent})
		if !trace.SpanContextFromContext(parent).IsValid() {
			parent = trace.ContextWithRemoteSpanContext(parent, SagaSpanContext(j.id))
		}
		name := ""
		if j.timer != nil {
			name = j.timer.name
		}
		_, span = t.tr.Start(parent, t.step+" timer "+name, trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attribute.String("troupe.timer", name)))
	} else {
		if j.rec.Context == nil {
			// Not seen by the fetch hook (a record the runtime made):
			// its traceparent, else its instance's trace.
			t.adopt(j.rec)
		}
		_, span = t.kt.WithProcessSpan(j.rec)
		typ := j.name
		if typ == "" {
			typ = j.rec.Topic
		}
		span.SetName(t.step + " process " + typ[strings.LastIndexByte(typ, '.')+1:])
		span.SetAttributes(attribute.String("messaging.message.id", j.eventID), attribute.String("troupe.event_type", j.name))
	}
	span.SetAttributes(attribute.String("troupe.step", t.step), attribute.String("troupe.saga_id", j.id))
	return trace.ContextWithSpan(ctx, span), span
}

// adopt gives r the parent context the fetch hook would have: its
// traceparent's, else its instance's derived one.
func (t *tracer) adopt(r *kgo.Record) {
	ctx := t.prop.Extract(context.Background(), kotel.NewRecordCarrier(r))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, SagaSpanContext(instanceOf(r)))
	}
	r.Context = ctx
}

// endSpan ends the span of job j's handler call, which has returned: a
// failed call's span has its error; a successful one's outputs will be
// published under it, and the timers it set fire under it.
func (rt *Runtime) endSpan(span trace.Span, j *job) {
	if span == nil {
		return
	}
	if j.err != nil {
		span.RecordError(j.err)
		span.SetStatus(codes.Error, j.err.Error())
		span.End()
		return
	}
	// Not the call's context: it ends with the call, and franz-go fails
	// a record whose context is done.
	out := trace.ContextWithSpan(context.Background(), span)
	for _, r := range j.cl.emits {
		r.Context = out
	}
	if tp := traceParent(span.SpanContext()); tp != "" {
		for i := range j.cl.timers {
			if !j.cl.timers[i].cancel {
				j.cl.timers[i].timer.TraceParent = tp
			}
		}
	}
	span.End()
}

// traceParent renders sc as a W3C traceparent header value.
func traceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// SagaSpanContext is the remote parent of the spans of an input that
// carries no valid traceparent: its trace id and span id are derived from
// the instance id (the record key, which is the saga id), so every step
// and the coordinator put an untraced instance's spans in one trace. It
// is sampled: the derived parent stands for a producer that did not trace.
func SagaSpanContext(id string) trace.SpanContext {
	sum := sha256.Sum256([]byte("troupe trace of saga " + id))
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], sum[:16])
	copy(sid[:], sum[16:24])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// TraceID is the id of the trace the handler call belongs to, as 32 hex
// digits: its span's when tracing is on (Config.Tracing), else the
// input's traceparent's; empty when neither names one.
func (c *Context[S]) TraceID() string {
	if c.c.ctx != nil {
		if sc := trace.SpanContextFromContext(c.c.ctx); sc.IsValid() {
			return sc.TraceID().String()
		}
	}
	if c.c.meta.TraceParent == "" {
		return ""
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{event.HeaderTraceParent: c.c.meta.TraceParent})
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
