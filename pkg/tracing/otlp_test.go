package tracing_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/troupehq/troupe/pkg/tracing"
	"github.com/troupehq/troupe/pkg/tracing/tracingtest"
)

// What the exporter writes decodes, with the collector's generated types,
// to every part of the spans: ids, parent, kind, times, attributes of each
// type, events, links, status, the resource and the scope; the
// OTEL_EXPORTER_OTLP_* headers, compression and traces endpoint are
// honoured; and a 503 is retried.
func TestExporterEncoding(t *testing.T) {
	rcv := tracingtest.NewReceiver(t)
	rcv.FailNext(2)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.URL()+"/v1/traces")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1") // the traces one wins
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret,x-tenant=acme")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	p, err := tracing.FromEnv(context.Background(), tracing.Options{Service: "enc"})
	if err != nil || p == nil {
		t.Fatalf("FromEnv = %v, %v", p, err)
	}
	tr := p.TracerProvider().Tracer("scope-a", trace.WithInstrumentationVersion("1.2.3"))
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: trace.SpanID{1, 1, 1, 1, 1, 1, 1, 1},
		TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx, s := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "process OrderPlaced",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("why", "cause")}}),
		trace.WithAttributes(
			attribute.String("saga.id", "o-1"), attribute.Int64("offset", 0), attribute.Int64("big", -1<<40),
			attribute.Bool("ok", false), attribute.Float64("ratio", 0.25),
			attribute.StringSlice("tags", []string{"a", ""}), attribute.Int64Slice("ns", []int64{1, -2}),
			attribute.BoolSlice("bs", []bool{true, false}), attribute.Float64Slice("fs", []float64{1.5}),
		))
	s.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", 2)))
	s.SetStatus(codes.Error, "boom")
	_, child := tr.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer))
	child.End()
	s.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.Requests(); got != 1 {
		t.Fatalf("%d requests decoded, want 1 (after two 503s)", got)
	}
	if h := rcv.Header("Authorization"); h != "Bearer s3cret" || rcv.Header("X-Tenant") != "acme" || rcv.Header("Content-Encoding") != "gzip" {
		t.Errorf("headers: authorization %q, x-tenant %q, content-encoding %q", h, rcv.Header("X-Tenant"), rcv.Header("Content-Encoding"))
	}
	rss := rcv.ResourceSpans()
	if len(rss) != 1 || len(rss[0].GetScopeSpans()) != 1 {
		t.Fatalf("want one resource with one scope: %v", rss)
	}
	res := map[string]string{}
	for _, kv := range rss[0].GetResource().GetAttributes() {
		res[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if res["service.name"] != "enc" || res["deployment.environment"] != "test" {
		t.Errorf("resource attributes %v", res)
	}
	ss := rss[0].GetScopeSpans()[0]
	if ss.GetScope().GetName() != "scope-a" || ss.GetScope().GetVersion() != "1.2.3" || len(ss.GetSpans()) != 2 {
		t.Fatalf("scope %v with %d spans", ss.GetScope(), len(ss.GetSpans()))
	}
	var got, pub *tracepb.Span
	for _, sp := range ss.GetSpans() {
		if sp.GetName() == "process OrderPlaced" {
			got = sp
		} else {
			pub = sp
		}
	}
	sc := s.SpanContext()
	switch {
	case got == nil || pub == nil:
		t.Fatalf("spans %v", ss.GetSpans())
	case hex.EncodeToString(got.GetTraceId()) != sc.TraceID().String() || hex.EncodeToString(got.GetSpanId()) != sc.SpanID().String():
		t.Errorf("ids %x/%x, want %s/%s", got.GetTraceId(), got.GetSpanId(), sc.TraceID(), sc.SpanID())
	case hex.EncodeToString(got.GetParentSpanId()) != remote.SpanID().String() || got.GetFlags() != 0x301:
		t.Errorf("parent %x flags %#x, want %s and sampled|has-remote|remote (0x301)", got.GetParentSpanId(), got.GetFlags(), remote.SpanID())
	case hex.EncodeToString(pub.GetParentSpanId()) != sc.SpanID().String() || pub.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER || pub.GetFlags() != 0x101:
		t.Errorf("child: parent %x kind %v flags %#x", pub.GetParentSpanId(), pub.GetKind(), pub.GetFlags())
	case got.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER:
		t.Errorf("kind %v", got.GetKind())
	case got.GetStartTimeUnixNano() == 0 || got.GetEndTimeUnixNano() < got.GetStartTimeUnixNano():
		t.Errorf("times %d..%d", got.GetStartTimeUnixNano(), got.GetEndTimeUnixNano())
	case got.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR || got.GetStatus().GetMessage() != "boom":
		t.Errorf("status %v", got.GetStatus())
	case len(got.GetEvents()) != 1 || got.GetEvents()[0].GetName() != "retry" || got.GetEvents()[0].GetAttributes()[0].GetValue().GetIntValue() != 2:
		t.Errorf("events %v", got.GetEvents())
	case len(got.GetLinks()) != 1 || hex.EncodeToString(got.GetLinks()[0].GetSpanId()) != remote.SpanID().String() || got.GetLinks()[0].GetAttributes()[0].GetValue().GetStringValue() != "cause":
		t.Errorf("links %v", got.GetLinks())
	}
	want := map[string]string{
		"saga.id": `{"stringValue":"o-1"}`, "offset": `{"intValue":"0"}`, "big": `{"intValue":"-1099511627776"}`,
		"ok": `{"boolValue":false}`, "ratio": `{"doubleValue":0.25}`,
		"tags": `{"arrayValue":{"values":[{"stringValue":"a"},{"stringValue":""}]}}`,
		"ns":   `{"arrayValue":{"values":[{"intValue":"1"},{"intValue":"-2"}]}}`,
		"bs":   `{"arrayValue":{"values":[{"boolValue":true},{"boolValue":false}]}}`,
		"fs":   `{"arrayValue":{"values":[{"doubleValue":1.5}]}}`,
	}
	attrs := map[string]*commonpb.AnyValue{}
	for _, kv := range got.GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue()
	}
	for k, w := range want {
		b, err := protojson.Marshal(attrs[k])
		if err != nil {
			t.Fatal(err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			t.Fatal(err)
		}
		if c.String() != w {
			t.Errorf("attribute %s = %s, want %s", k, c.String(), w)
		}
	}
}

// Shutdown ends an export in flight to a collector that never answers
// rather than waiting out the exporter's timeout (30 s here).
func TestShutdownCancelsExport(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+tracingtest.Silent(t))
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
	p, err := tracing.FromEnv(context.Background(), tracing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, s := p.TracerProvider().Tracer("test").Start(context.Background(), "work")
	s.End()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_ = p.Shutdown(ctx) // the span could not be exported: an error is expected
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("Shutdown took %s with a 500 ms context: it waited on the export in flight", d)
	}
}
