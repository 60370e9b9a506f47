package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/kafka"
)

// nested is a record nesting depth records, the innermost field of type
// leaf.
func nested(depth int, leaf string) string {
	var b strings.Builder
	for i := range depth {
		fmt.Fprintf(&b, `{"type":"record","name":"R%d","fields":[{"name":"f","type":`, i)
	}
	b.WriteString(leaf)
	for range depth {
		b.WriteString(`}]}`)
	}
	return b.String()
}

// offline is a server without Kafka holding subject s (version 1: schema),
// as FuzzHTTP builds it: reads and checks work, writes fail.
func offline(t testing.TB, cfg Config, schema string) *Server {
	t.Helper()
	cfg.Kafka = kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	s, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	k, _ := json.Marshal(recordKey{Troupe: 1, Kind: kindSchema, Subject: "s", Version: 1, Proposal: "p"})
	v, _ := json.Marshal(schemaValue{Subject: "s", Version: 1, ID: 1, Schema: schema})
	if err := s.st.apply(k, v, 0); err != nil {
		t.Fatal(err)
	}
	s.markReady(time.Now())
	return s
}

type reply struct {
	status int
	ctype  string
	Code   int    `json:"error_code"`
	Msg    string `json:"message"`
	body   string
}

func call(t testing.TB, s *Server, method, path, body string) reply {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(method, "http://registry"+path, strings.NewReader(body)))
	r := reply{status: w.Code, ctype: w.Header().Get("Content-Type"), body: w.Body.String()}
	if !json.Valid(w.Body.Bytes()) {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, w.Code, r.body)
	}
	_ = json.Unmarshal(w.Body.Bytes(), &r)
	return r
}

func schemaBody(schema string) string {
	b, _ := json.Marshal(map[string]string{"schema": schema})
	return string(b)
}

const simple = `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`

// The schema that made hamba/avro panic (the client got an empty reply) is
// a 422 on every route that parses.
func TestParserPanicIs422(t *testing.T) {
	s := offline(t, Config{}, simple)
	crasher := schemaBody(`{"type":"record","name":"R","fields":[{"name":"a","type":[],"default":null}]}`)
	for _, path := range []string{"/subjects/s/versions", "/subjects/s", "/compatibility/subjects/s/versions/latest", "/compatibility/subjects/s/versions"} {
		r := call(t, s, "POST", path, crasher)
		if r.status != http.StatusUnprocessableEntity || r.Code != 42201 || !strings.Contains(r.Msg, "Avro parser failed") {
			t.Errorf("POST %s with the crasher: %d %s", path, r.status, r.body)
		}
	}
}

func TestSchemaLimits(t *testing.T) {
	s := offline(t, Config{}, simple)
	// Nesting: 40 records is 120 JSON levels, over the default 96.
	r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", schemaBody(nested(40, `"int"`)))
	if r.status != 422 || r.Code != 42201 || !strings.Contains(r.Msg, "more than 96 levels deep") || !strings.Contains(r.Msg, "MaxSchemaDepth") {
		t.Errorf("40 nested records: %d %s", r.status, r.body)
	}
	if r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", schemaBody(nested(30, `"int"`))); r.status != 200 {
		t.Errorf("30 nested records (90 levels): %d %s", r.status, r.body)
	}
	// Size: 300 KiB of fields.
	var fields []string
	for i := 0; len(strings.Join(fields, ",")) < 300<<10; i++ {
		fields = append(fields, fmt.Sprintf(`{"name":"field_%06d","type":"string","doc":"padding padding padding"}`, i))
	}
	big := `{"type":"record","name":"R","fields":[` + strings.Join(fields, ",") + `]}`
	r = call(t, s, "POST", "/subjects/s/versions", schemaBody(big))
	if r.status != 422 || !strings.Contains(r.Msg, fmt.Sprintf("%d bytes (compact JSON), over the built-in registry's limit of %d bytes", len(big), DefaultMaxSchemaBytes)) {
		t.Errorf("a %d-byte schema: %d %.300s", len(big), r.status, r.body)
	}
	// A body over twice the schema limit: 413, before it is parsed.
	huge := schemaBody(big + strings.Repeat(" ", 600<<10))
	r = call(t, s, "POST", "/subjects/s/versions", huge)
	if r.status != http.StatusRequestEntityTooLarge || r.Code != 41301 || !strings.Contains(r.Msg, "request body over") {
		t.Errorf("a %d-byte body: %d %.300s", len(huge), r.status, r.body)
	}
	if r := call(t, s, "PUT", "/config", `{"compatibility":"`+strings.Repeat("x", 70<<10)+`"}`); r.status != 413 {
		t.Errorf("a 70 KiB config body: %d %.300s", r.status, r.body)
	}
}

// Errors quote at most a few hundred bytes of what the client sent; every
// route, known or not, answers JSON in Confluent's format.
func TestErrorsQuoteLittle(t *testing.T) {
	s := offline(t, Config{}, simple)
	long := strings.Repeat("x", 100_000)
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/subjects/s/versions/" + long, "", 422},
		{"POST", "/subjects/" + long + "/versions", schemaBody(simple), 400},
		{"PUT", "/config/" + long, `{"compatibility":"BACKWARD"}`, 400},
		{"PUT", "/config", `{"compatibility":"` + long[:10_000] + `"}`, 422},
		{"POST", "/subjects/s/versions", schemaBody(`{"type":"record","name":"R","fields":[{"name":"a","type":"` + long + `"}]}`), 422},
		{"PATCH", "/subjects/" + long, "", 404},
		{"GET", "/nowhere/" + long, "", 404},
		{"PUT", "/subjects/s/versions", "", 404}, // a known path with another method
	} {
		r := call(t, s, tc.method, tc.path, tc.body)
		if r.status != tc.status || r.Code == 0 || r.Msg == "" || r.ctype != contentType {
			t.Errorf("%s %.60s: %d %s %.300s; want %d, a Confluent error", tc.method, tc.path, r.status, r.ctype, r.body, tc.status)
		}
		if len(r.Msg) > 600 {
			t.Errorf("%s %.60s: the error is %d bytes: %.300s…", tc.method, tc.path, len(r.Msg), r.Msg)
		}
	}
}

func TestNotFoundQuotesLittle(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	for _, err := range []error{errSubjectNotFound(long), errVersionNotFound(long, long), errInvalidVersion(long), incompatible(long, []string{"m"})} {
		if len(err.Error()) > 700 {
			t.Errorf("error of %d bytes: %.200s…", len(err.Error()), err)
		}
	}
}

// A compatibility check is answered after CheckTimeout at the latest (one
// against a 200-level schema takes about a second here), and the next one
// waits for a turn while MaxChecks are running, then gets a 503.
func TestCompatibilityCheckBounded(t *testing.T) {
	const timeout = 100 * time.Millisecond
	deep := nested(200, `"int"`)
	s := offline(t, Config{MaxSchemaDepth: 1000, CheckTimeout: timeout, MaxChecks: 1}, deep)
	start := time.Now()
	r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", schemaBody(nested(200, `"long"`)))
	took := time.Since(start)
	if r.status != 422 || !strings.Contains(r.Msg, "took longer than 100ms") || !strings.Contains(r.Msg, "CheckTimeout") {
		t.Fatalf("check of a 200-level schema: %d %s", r.status, r.body)
	}
	// The check given up on still runs and holds the only turn.
	r = call(t, s, "POST", "/compatibility/subjects/s/versions/latest", schemaBody(simple))
	if len(s.checks) == 1 && (r.status != 503 || r.Code != 50003 || !strings.Contains(r.Msg, "busy")) {
		t.Errorf("a check while the only turn is taken: %d %s", r.status, r.body)
	}
	s.checking.Wait()
	// Answered well before the check itself ended (a ratio of one run, so
	// that a loaded machine slows both alike).
	if full := time.Since(start); took > full/2 {
		t.Errorf("answered after %s, and the check took %s: the %s timeout did not answer early", took, full, timeout)
	}
	if len(s.checks) != 0 {
		t.Fatalf("%d turns still taken after the checks ended", len(s.checks))
	}
	if r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", schemaBody(simple)); r.status != 200 || !strings.Contains(r.body, `"is_compatible":false`) {
		t.Errorf("a small check once the turn is free: %d %s", r.status, r.body)
	}
}

// A check whose client went away stops.
func TestCompatibilityCheckCancelled(t *testing.T) {
	s := offline(t, Config{}, simple)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sch, err := parse(simple)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	against := s.existing("s")
	s.mu.RUnlock()
	if _, err := s.compat(ctx, Backward, sch, against); !errors.Is(err, context.Canceled) {
		t.Fatalf("compat with the request gone: %v, want context.Canceled", err)
	}
	if _, err := s.checker.check(ctx, Backward, sch, against); !errors.Is(err, context.Canceled) {
		t.Fatalf("check with the request gone: %v, want context.Canceled", err)
	}
}

// A schema is held to the nesting limit with the types it references
// inlined: referencing a deep type cannot split a schema too costly to
// check into parts that pass one by one. And references may pull in at
// most maxResolved schemas.
func TestReferencesWithinLimits(t *testing.T) {
	// 60 levels, type R0 outermost. Checks go against s: a subject this
	// server does not know would need Kafka to be sure of it.
	s := offline(t, Config{}, nested(20, `"int"`))
	wrap := func(depth int) string {
		b, _ := json.Marshal(map[string]any{
			"schema":     strings.ReplaceAll(nested(depth, `"R0"`), `"name":"R`, `"name":"Q`),
			"references": []Reference{{Name: "R0", Subject: "s", Version: 1}},
		})
		return string(b)
	}
	if r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", wrap(10)); r.status != 200 {
		t.Errorf("10 records around the 20 referenced (90 levels): %d %s", r.status, r.body)
	}
	r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", wrap(20))
	if r.status != 422 || r.Code != 42201 || !strings.Contains(r.Msg, "more than 96 levels deep") || !strings.Contains(r.Msg, "counting the types it references") {
		t.Errorf("20 records around the 20 referenced (120 levels): %d %s", r.status, r.body)
	}

	// A chain of 101 subjects, each referencing the one before.
	for i := 0; i <= maxResolved; i++ {
		v := schemaValue{Subject: fmt.Sprintf("c%d", i), Version: 1, ID: 10 + i,
			Schema: fmt.Sprintf(`{"type":"record","name":"C%d","fields":[{"name":"f","type":"int"}]}`, i)}
		if i > 0 {
			v.References = []Reference{{Name: fmt.Sprintf("C%d", i-1), Subject: fmt.Sprintf("c%d", i-1), Version: 1}}
		}
		k, _ := json.Marshal(recordKey{Troupe: 1, Kind: kindSchema, Subject: v.Subject, Version: 1, Proposal: v.Subject})
		b, _ := json.Marshal(v)
		if err := s.st.apply(k, b, s.st.applied); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(n int) string {
		b, _ := json.Marshal(map[string]any{"schema": `"int"`, "references": []Reference{{Name: fmt.Sprintf("C%d", n), Subject: fmt.Sprintf("c%d", n), Version: 1}}})
		return string(b)
	}
	if r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", ref(maxResolved-1)); r.status != 200 {
		t.Errorf("references pulling in %d schemas: %d %s", maxResolved, r.status, r.body)
	}
	if r := call(t, s, "POST", "/compatibility/subjects/s/versions/latest", ref(maxResolved)); r.status != 422 || !strings.Contains(r.Msg, "pull in more than 100 schemas") {
		t.Errorf("references pulling in %d schemas: %d %s", maxResolved+1, r.status, r.body)
	}
}
