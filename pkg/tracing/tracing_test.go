package tracing_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"

	"github.com/troupehq/troupe/pkg/tracing"
	"github.com/troupehq/troupe/pkg/tracing/tracingtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnvOff(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"nothing set":       {},
		"sdk disabled":      {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		"exporter none":     {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
		"only service name": {"OTEL_SERVICE_NAME": "x"},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := tracing.FromEnv(context.Background(), tracing.Options{Getenv: envOf(env)})
			if err != nil || p != nil {
				t.Fatalf("FromEnv = %v, %v; want nil, nil (off)", p, err)
			}
			if tp := p.TracerProvider(); tp != nil {
				t.Fatalf("a nil Provider's TracerProvider is %T, want a nil interface (step.Config.Tracing off)", tp)
			}
			if p.ProducerOpts() != nil || p.Shutdown(context.Background()) != nil {
				t.Fatal("a nil Provider must do nothing")
			}
		})
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if !tracing.Enabled(envOf(map[string]string{k: "http://127.0.0.1:4318"})) {
			t.Errorf("%s set: tracing is off, want on", k)
		}
	}
}

func TestFromEnvRefuses(t *testing.T) {
	for env, want := range map[string]string{
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc":        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: troupe exports OTLP over HTTP only",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc",
		"OTEL_TRACES_EXPORTER=zipkin":             "OTEL_TRACES_EXPORTER=zipkin: troupe exports traces over OTLP only",
		"OTEL_BSP_MAX_QUEUE_SIZE=lots":            "OTEL_BSP_MAX_QUEUE_SIZE=lots: want a positive integer",
	} {
		k, v, _ := strings.Cut(env, "=")
		_, err := tracing.FromEnv(context.Background(), tracing.Options{Getenv: envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", k: v})})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want one containing %q", env, err, want)
		}
	}
}

// TestExportToReceiver exports through the real OTLP/HTTP exporter to a
// receiver in the test process.
func TestExportToReceiver(t *testing.T) {
	rcv := tracingtest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL())
	t.Setenv("OTEL_SERVICE_NAME", "troupe-test")
	reg := prometheus.NewRegistry()
	p, err := tracing.FromEnv(context.Background(), tracing.Options{Service: "ignored", Registerer: reg})
	if err != nil || p == nil {
		t.Fatalf("FromEnv = %v, %v", p, err)
	}
	tr := p.TracerProvider().Tracer("test")
	ctx, parent := tr.Start(context.Background(), "parent", trace.WithSpanKind(trace.SpanKindConsumer))
	_, child := tr.Start(ctx, "child")
	child.End()
	parent.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	if len(spans) != 2 {
		t.Fatalf("received %d spans, want 2: %+v", len(spans), spans)
	}
	byName := map[string]tracingtest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
		if s.Service != "troupe-test" {
			t.Errorf("span %s: service.name %q, want OTEL_SERVICE_NAME's troupe-test", s.Name, s.Service)
		}
	}
	pa, ch := byName["parent"], byName["child"]
	if pa.TraceID != parent.SpanContext().TraceID().String() || ch.TraceID != pa.TraceID {
		t.Errorf("trace ids: parent %s, child %s, want %s", pa.TraceID, ch.TraceID, parent.SpanContext().TraceID())
	}
	if ch.ParentID != pa.SpanID || pa.ParentID != "" {
		t.Errorf("child's parent %s, want %s; parent's %q, want none", ch.ParentID, pa.SpanID, pa.ParentID)
	}
	if pa.Kind != tracepb.Span_SPAN_KIND_CONSUMER {
		t.Errorf("parent kind %v, want consumer", pa.Kind)
	}
	if got := value(t, reg, "troupe_trace_spans_exported_total", ""); got != 2 {
		t.Errorf("troupe_trace_spans_exported_total = %v, want 2", got)
	}
}

// TestUnreachable: a collector that refuses connections, or accepts them
// and never answers, never holds up ending a span; what cannot be
// exported is dropped and counted.
func TestUnreachable(t *testing.T) {
	for _, mode := range []string{"refused", "silent"} {
		t.Run(mode, func(t *testing.T) {
			addr := tracingtest.Refused(t)
			if mode == "silent" {
				addr = tracingtest.Silent(t)
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
			t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200")
			t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
			t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
			t.Setenv("OTEL_BSP_EXPORT_TIMEOUT", "300")
			reg := prometheus.NewRegistry()
			p, err := tracing.FromEnv(context.Background(), tracing.Options{Registerer: reg, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			tr := p.TracerProvider().Tracer("test")
			const n = 2000
			t0 := time.Now()
			for range n {
				_, s := tr.Start(context.Background(), "work")
				s.End()
			}
			// Ending them takes milliseconds; had End waited for room in
			// the queue, each batch of 4 would wait out a 200 ms export
			// (100 s in all).
			if d := time.Since(t0); d > 2*time.Second {
				t.Errorf("ending %d spans took %s: End waits on the export", n, d)
			}
			deadline := time.Now().Add(20 * time.Second)
			for value(t, reg, "troupe_trace_spans_dropped_total", "export_failed") == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			full, failed := value(t, reg, "troupe_trace_spans_dropped_total", "queue_full"), value(t, reg, "troupe_trace_spans_dropped_total", "export_failed")
			if full == 0 || failed == 0 {
				t.Errorf("dropped: queue_full %v, export_failed %v; want both > 0", full, failed)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			t0 = time.Now()
			_ = p.Shutdown(ctx) // an error is expected: what was left could not be exported
			if d := time.Since(t0); d > 3*time.Second {
				t.Errorf("Shutdown took %s, want it bounded by its 1 s context", d)
			}
			full, failed = value(t, reg, "troupe_trace_spans_dropped_total", "queue_full"), value(t, reg, "troupe_trace_spans_dropped_total", "export_failed")
			if exported := value(t, reg, "troupe_trace_spans_exported_total", ""); full+failed != n || exported != 0 {
				t.Errorf("after shutdown: %v dropped (queue_full %v + export_failed %v), %v exported; want all %d dropped", full+failed, full, failed, exported, n)
			}
		})
	}
}

// value is the value of the counter name{reason=label} (any labels when
// label is empty) in reg.
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == label {
					ok = true
				}
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
