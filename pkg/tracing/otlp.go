package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// exporter sends spans to an OTLP/HTTP collector as protobuf
// (ExportTraceServiceRequest, POST to …/v1/traces), as the OTel SDK's
// otlptracehttp exporter does, with the same OTEL_EXPORTER_OTLP_*
// variables. It is written here, on protowire, because the SDK's exporter
// compiles in gRPC and its gateway (5 MB of binary and about 260 lines of
// module graph) for an HTTP client.
type exporter struct {
	url        string
	headers    map[string]string
	gzip       bool
	timeout    time.Duration
	client     *http.Client
	maxBackoff time.Duration
	stopped    chan struct{}
	// stop ends the requests in flight at Shutdown.
	stop       context.Context
	stopCancel context.CancelFunc
}

// newExporter reads the exporter's variables (traces-specific first, then
// the general ones), naming the variable in an error.
func newExporter(getenv func(string) string) (*exporter, error) {
	get := func(name string) (string, string) {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_" + name)); v != "" {
			return v, "OTEL_EXPORTER_OTLP_TRACES_" + name
		}
		return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + name)), "OTEL_EXPORTER_OTLP_" + name
	}
	e := &exporter{timeout: 10 * time.Second, maxBackoff: 5 * time.Second, stopped: make(chan struct{})}
	var errs []error

	e.url = "http://localhost:4318/v1/traces"
	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
		e.url = v // as it is, as the spec says of a signal's own endpoint
	} else if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
		e.url = strings.TrimSuffix(v, "/") + "/v1/traces"
	}
	if u, err := url.Parse(e.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL with a host (the collector's HTTP port, usually 4318)", e.url))
	}

	if v, k := get("HEADERS"); v != "" {
		e.headers = map[string]string{}
		for _, kv := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(kv, "=")
			name = strings.TrimSpace(name)
			dv, err := url.PathUnescape(strings.TrimSpace(val))
			if !ok || name == "" || err != nil {
				errs = append(errs, fmt.Errorf("%s: want key=value pairs separated by commas, values URL-encoded", k))
				break
			}
			e.headers[name] = dv
		}
	}
	if v, k := get("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: want milliseconds, a positive integer", k, v))
		} else {
			e.timeout = time.Duration(ms) * time.Millisecond
		}
	}
	switch v, k := get("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		e.gzip = true
	default:
		errs = append(errs, fmt.Errorf("%s=%s: want gzip or none", k, v))
	}

	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if v, k := get("CERTIFICATE"); v != "" {
		pem, err := os.ReadFile(v)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Errorf("%s=%s: no PEM certificate in it", k, v))
		default:
			tlsCfg.RootCAs = pool
		}
	}
	cert, kc := get("CLIENT_CERTIFICATE")
	key, kk := get("CLIENT_KEY")
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s and %s: %w", kc, kk, err))
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	case cert != "" || key != "":
		errs = append(errs, fmt.Errorf("%s and %s go together: set both, or neither", kc, kk))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	e.client = &http.Client{Transport: tr}
	e.stop, e.stopCancel = context.WithCancel(context.Background())
	return e, nil
}

// ExportSpans posts spans in one request, retrying what the collector
// says to retry (429, 502, 503, 504; its Retry-After honoured) with
// backoff until ctx or the exporter's timeout ends.
func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.stopped:
		return errors.New("trace exporter stopped")
	default:
	}
	if len(spans) == 0 {
		return nil
	}
	body := encodeRequest(spans)
	encoding := ""
	if e.gzip {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(body); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		body, encoding = b.Bytes(), "gzip"
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	defer context.AfterFunc(e.stop, cancel)()
	backoff := 100 * time.Millisecond
	for {
		wait, err := e.post(ctx, body, encoding)
		if err == nil || wait < 0 {
			return err
		}
		wait = max(wait, backoff)
		backoff = min(2*backoff, e.maxBackoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up retrying: %w)", err, ctx.Err())
		case <-e.stopped:
			return err
		case <-time.After(wait):
		}
	}
}

// post sends one request. A retryable failure returns how long to wait (0:
// the backoff's), a final one -1.
func (e *exporter) post(ctx context.Context, body []byte, encoding string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return -1, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "troupe-otlp-exporter")
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post spans to %s: %w", e.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted, http.StatusNoContent:
		return 0, nil
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return wait, fmt.Errorf("collector at %s answered %s", e.url, resp.Status)
	}
	return -1, fmt.Errorf("collector at %s answered %s: %s", e.url, resp.Status, bytes.TrimSpace(msg))
}

// Shutdown stops exporting: a request or a retry in flight ends, later
// exports fail.
func (e *exporter) Shutdown(context.Context) error {
	select {
	case <-e.stopped:
	default:
		close(e.stopped)
		e.stopCancel()
		e.client.CloseIdleConnections()
	}
	return nil
}

// The OTLP protobuf encoding (opentelemetry-proto, trace/v1 and
// common/v1): field numbers of the messages written below.
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest

	fRSResource   = 1 // ResourceSpans
	fRSScopeSpans = 2
	fRSSchemaURL  = 3

	fResAttributes = 1 // Resource
	fSSScope       = 1 // ScopeSpans
	fSSSpans       = 2
	fSSSchemaURL   = 3

	fScopeName    = 1 // InstrumentationScope
	fScopeVersion = 2
	fScopeAttrs   = 3

	fSpanTraceID      = 1 // Span
	fSpanSpanID       = 2
	fSpanTraceState   = 3
	fSpanParentSpanID = 4
	fSpanName         = 5
	fSpanKind         = 6
	fSpanStart        = 7
	fSpanEnd          = 8
	fSpanAttributes   = 9
	fSpanDroppedAttrs = 10
	fSpanEvents       = 11
	fSpanDroppedEvts  = 12
	fSpanLinks        = 13
	fSpanDroppedLinks = 14
	fSpanStatus       = 15
	fSpanFlags        = 16

	fEventTime  = 1 // Span.Event
	fEventName  = 2
	fEventAttrs = 3

	fLinkTraceID    = 1 // Span.Link
	fLinkSpanID     = 2
	fLinkTraceState = 3
	fLinkAttrs      = 4
	fLinkFlags      = 6

	fStatusMessage = 2 // Status
	fStatusCode    = 3

	fKVKey   = 1 // KeyValue
	fKVValue = 2

	fAnyString = 1 // AnyValue
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5

	fArrayValues = 1 // ArrayValue
)

// encodeRequest is the ExportTraceServiceRequest of spans, grouped by
// resource and then by instrumentation scope, in the order they came.
func encodeRequest(spans []sdktrace.ReadOnlySpan) []byte {
	type scoped struct {
		scope instrumentation.Scope
		spans []sdktrace.ReadOnlySpan
	}
	type group struct {
		res    *resource.Resource
		scopes []*scoped
	}
	var groups []*group
	for _, s := range spans {
		var g *group
		for _, x := range groups {
			if x.res == s.Resource() || x.res.Equal(s.Resource()) {
				g = x
				break
			}
		}
		if g == nil {
			g = &group{res: s.Resource()}
			groups = append(groups, g)
		}
		var sc *scoped
		for _, x := range g.scopes {
			if x.scope == s.InstrumentationScope() {
				sc = x
				break
			}
		}
		if sc == nil {
			sc = &scoped{scope: s.InstrumentationScope()}
			g.scopes = append(g.scopes, sc)
		}
		sc.spans = append(sc.spans, s)
	}
	var out []byte
	for _, g := range groups {
		out = message(out, fReqResourceSpans, func(b []byte) []byte {
			b = message(b, fRSResource, func(b []byte) []byte {
				if g.res == nil {
					return b
				}
				return attributes(b, fResAttributes, g.res.Attributes())
			})
			for _, sc := range g.scopes {
				b = message(b, fRSScopeSpans, func(b []byte) []byte {
					b = message(b, fSSScope, func(b []byte) []byte {
						b = str(b, fScopeName, sc.scope.Name)
						b = str(b, fScopeVersion, sc.scope.Version)
						return attributes(b, fScopeAttrs, sc.scope.Attributes.ToSlice())
					})
					for _, s := range sc.spans {
						b = message(b, fSSSpans, func(b []byte) []byte { return span(b, s) })
					}
					return str(b, fSSSchemaURL, sc.scope.SchemaURL)
				})
			}
			if g.res != nil {
				b = str(b, fRSSchemaURL, g.res.SchemaURL())
			}
			return b
		})
	}
	return out
}

func span(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = bytesField(b, fSpanTraceID, tid[:])
	b = bytesField(b, fSpanSpanID, sid[:])
	b = str(b, fSpanTraceState, sc.TraceState().String())
	if p := s.Parent(); p.SpanID().IsValid() {
		pid := p.SpanID()
		b = bytesField(b, fSpanParentSpanID, pid[:])
	}
	b = str(b, fSpanName, s.Name())
	b = varint(b, fSpanKind, uint64(spanKind(s.SpanKind())))
	b = fixed64(b, fSpanStart, unixNano(s.StartTime()))
	b = fixed64(b, fSpanEnd, unixNano(s.EndTime()))
	b = attributes(b, fSpanAttributes, s.Attributes())
	b = varint(b, fSpanDroppedAttrs, uint64(s.DroppedAttributes()))
	for _, ev := range s.Events() {
		b = message(b, fSpanEvents, func(b []byte) []byte {
			b = fixed64(b, fEventTime, unixNano(ev.Time))
			b = str(b, fEventName, ev.Name)
			return attributes(b, fEventAttrs, ev.Attributes)
		})
	}
	b = varint(b, fSpanDroppedEvts, uint64(s.DroppedEvents()))
	for _, l := range s.Links() {
		b = message(b, fSpanLinks, func(b []byte) []byte {
			ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
			b = bytesField(b, fLinkTraceID, ltid[:])
			b = bytesField(b, fLinkSpanID, lsid[:])
			b = str(b, fLinkTraceState, l.SpanContext.TraceState().String())
			b = attributes(b, fLinkAttrs, l.Attributes)
			return fixed32(b, fLinkFlags, uint32(l.SpanContext.TraceFlags()))
		})
	}
	b = varint(b, fSpanDroppedLinks, uint64(s.DroppedLinks()))
	st := s.Status()
	if st.Code != codes.Unset || st.Description != "" {
		b = message(b, fSpanStatus, func(b []byte) []byte {
			b = str(b, fStatusMessage, st.Description)
			return varint(b, fStatusCode, uint64(statusCode(st.Code)))
		})
	}
	flags := uint32(sc.TraceFlags())
	if p := s.Parent(); p.IsValid() {
		flags |= 0x100 // SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
		if p.IsRemote() {
			flags |= 0x200
		}
	}
	return fixed32(b, fSpanFlags, flags)
}

// spanKind maps the API's kinds to OTLP's, which number them alike.
func spanKind(k trace.SpanKind) int {
	if k < trace.SpanKindInternal || k > trace.SpanKindConsumer {
		return 0 // SPAN_KIND_UNSPECIFIED
	}
	return int(k)
}

// statusCode maps the API's codes (Unset, Error, Ok) to OTLP's (UNSET, OK,
// ERROR).
func statusCode(c codes.Code) int {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func attributes(b []byte, num protowire.Number, kvs []attribute.KeyValue) []byte {
	for _, kv := range kvs {
		b = message(b, num, func(b []byte) []byte {
			b = str(b, fKVKey, string(kv.Key))
			return message(b, fKVValue, func(b []byte) []byte { return anyValue(b, kv.Value) })
		})
	}
	return b
}

func anyValue(b []byte, v attribute.Value) []byte {
	array := func(n int, each func(b []byte, i int) []byte) []byte {
		return message(b, fAnyArray, func(b []byte) []byte {
			for i := range n {
				b = message(b, fArrayValues, func(b []byte) []byte { return each(b, i) })
			}
			return b
		})
	}
	switch v.Type() {
	case attribute.BOOL:
		return boolField(b, fAnyBool, v.AsBool())
	case attribute.INT64:
		return protowire.AppendVarint(protowire.AppendTag(b, fAnyInt, protowire.VarintType), uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return protowire.AppendFixed64(protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type), math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		return protowire.AppendString(protowire.AppendTag(b, fAnyString, protowire.BytesType), v.AsString())
	case attribute.BOOLSLICE:
		s := v.AsBoolSlice()
		return array(len(s), func(b []byte, i int) []byte { return boolField(b, fAnyBool, s[i]) })
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return array(len(s), func(b []byte, i int) []byte {
			return protowire.AppendVarint(protowire.AppendTag(b, fAnyInt, protowire.VarintType), uint64(s[i]))
		})
	case attribute.FLOAT64SLICE:
		s := v.AsFloat64Slice()
		return array(len(s), func(b []byte, i int) []byte {
			return protowire.AppendFixed64(protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type), math.Float64bits(s[i]))
		})
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return array(len(s), func(b []byte, i int) []byte {
			return protowire.AppendString(protowire.AppendTag(b, fAnyString, protowire.BytesType), s[i])
		})
	}
	return protowire.AppendString(protowire.AppendTag(b, fAnyString, protowire.BytesType), v.Emit())
}

// message appends field num holding the message fill writes.
func message(b []byte, num protowire.Number, fill func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	// The length goes before the message: write it, then move the message
	// right if its length took more than the one byte reserved.
	at := len(b)
	b = append(b, 0)
	b = fill(b)
	n := len(b) - at - 1
	if size := protowire.SizeVarint(uint64(n)); size > 1 {
		b = append(b, make([]byte, size-1)...)
		copy(b[at+size:], b[at+1:at+1+n])
	}
	protowire.AppendVarint(b[:at], uint64(n))
	return b
}

// str, bytesField, varint, boolField, fixed64 and fixed32 append a field,
// leaving out a zero value as proto3 does.
func str(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func bytesField(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func varint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func boolField(b []byte, num protowire.Number, v bool) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), protowire.EncodeBool(v))
}

func fixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), v)
}

func fixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), v)
}
