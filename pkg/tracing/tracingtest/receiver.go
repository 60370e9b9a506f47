// Package tracingtest is an OTLP/HTTP trace receiver for tests: an HTTP
// server in the test process that decodes the export requests an OTLP
// exporter sends to /v1/traces (protobuf, gzip or not) and keeps their
// spans.
package tracingtest

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Span is a received span with what tests look at.
type Span struct {
	Name     string
	TraceID  string // 32 hex digits
	SpanID   string // 16 hex digits
	ParentID string // empty for a root
	Kind     tracepb.Span_SpanKind
	Attrs    map[string]string // string and int attributes, as text
	Service  string            // the resource's service.name
	Error    bool              // status ERROR
}

// Receiver collects the spans exported to it.
type Receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	spans    []Span
	raw      []*tracepb.ResourceSpans
	headers  http.Header // of the last request decoded
	requests int
	fail     int // requests still to answer 503
}

// FailNext makes the receiver answer the next n requests 503 Service
// Unavailable, as a collector under pressure does.
func (r *Receiver) FailNext(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = n
}

// ResourceSpans returns every ResourceSpans received, as the collector's
// protobuf types decode them.
func (r *Receiver) ResourceSpans() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.ResourceSpans(nil), r.raw...)
}

// Header is header k of the last request decoded.
func (r *Receiver) Header(k string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers.Get(k)
}

// NewReceiver starts a receiver, closed when the test ends. Point
// OTEL_EXPORTER_OTLP_ENDPOINT at its URL.
func NewReceiver(t testing.TB) *Receiver {
	r := &Receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// URL is the receiver's base URL (the exporter appends /v1/traces).
func (r *Receiver) URL() string { return r.srv.URL }

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Requests is how many export requests were decoded.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "want POST /v1/traces", http.StatusNotFound)
		return
	}
	r.mu.Lock()
	fail := r.fail > 0
	if fail {
		r.fail--
	}
	r.mu.Unlock()
	if fail {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "want application/x-protobuf, got "+ct, http.StatusUnsupportedMediaType)
		return
	}
	// ExportTraceServiceRequest is field 1, repeated ResourceSpans: read
	// here, so that the collector's service package (and gRPC with it)
	// stays out of the build; each ResourceSpans decodes with its
	// generated type.
	var resourceSpans []*tracepb.ResourceSpans
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			http.Error(w, protowire.ParseError(n).Error(), http.StatusBadRequest)
			return
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				http.Error(w, protowire.ParseError(n).Error(), http.StatusBadRequest)
				return
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			http.Error(w, protowire.ParseError(n).Error(), http.StatusBadRequest)
			return
		}
		b = b[n:]
		rs := &tracepb.ResourceSpans{}
		if err := proto.Unmarshal(v, rs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resourceSpans = append(resourceSpans, rs)
	}
	var got []Span
	for _, rs := range resourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					Name: s.GetName(), TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Kind: s.GetKind(), Attrs: map[string]string{},
					Service: service, Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				}
				for _, kv := range s.GetAttributes() {
					switch v := kv.GetValue().GetValue().(type) {
					case *commonpb.AnyValue_StringValue:
						sp.Attrs[kv.GetKey()] = v.StringValue
					case *commonpb.AnyValue_IntValue:
						sp.Attrs[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
					case *commonpb.AnyValue_BoolValue:
						sp.Attrs[kv.GetKey()] = strconv.FormatBool(v.BoolValue)
					}
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.raw = append(r.raw, resourceSpans...)
	r.headers = req.Header.Clone()
	r.requests++
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
}

// Silent returns the address of a listener that accepts connections and
// never answers, until the test ends: a collector that hangs.
func Silent(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Refused returns a loopback address nothing listens on: a collector that
// is down.
func Refused(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
