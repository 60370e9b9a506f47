package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
)

const (
	orderV1 = `{"type":"record","name":"OrderPlaced","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"amountCents","type":"long"}]}`
	// v2 adds a field with a default: compatible both ways.
	orderV2 = `{"type":"record","name":"OrderPlaced","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"amountCents","type":"long"},
		{"name":"currency","type":"string","default":"EUR"}]}`
	// Adds a field without a default: a new reader cannot read old data.
	orderAddedNoDefault = `{"type":"record","name":"OrderPlaced","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"amountCents","type":"long"},
		{"name":"customerId","type":"string"}]}`
	// Changes a type.
	orderChangedType = `{"type":"record","name":"OrderPlaced","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"amountCents","type":"string"}]}`
	// Removes amountCents, which has no default: old readers cannot read new data.
	orderRemoved = `{"type":"record","name":"OrderPlaced","namespace":"t","fields":[
		{"name":"orderId","type":"string"}]}`
)

func newCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// instance is one running registry server.
type instance struct {
	cluster *kfake.Cluster
	srv     *registry.Server
	http    *httptest.Server
	sr      *sr.Client
	stop    func()
}

func start(t *testing.T, c *kfake.Cluster) *instance {
	t.Helper()
	srv, err := registry.New(registry.Config{Kafka: kafka.Config{Brokers: c.ListenAddrs()}}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("registry stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("registry not ready after 20s")
	}
	hs := httptest.NewServer(srv)
	cl, err := sr.NewClient(sr.URLs(hs.URL))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	in := &instance{cluster: c, srv: srv, http: hs, sr: cl}
	in.stop = func() {
		once.Do(func() {
			hs.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run returned %v", err)
			}
		})
	}
	t.Cleanup(in.stop)
	return in
}

func avro(s string) sr.Schema { return sr.Schema{Schema: s, Type: sr.TypeAvro} }

func errCode(err error) int {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return 0
}

// TestThroughSRClient drives the registry with franz-go's client, as every
// troupe component does.
func TestThroughSRClient(t *testing.T) {
	ctx := context.Background()
	in := start(t, newCluster(t))
	cl := in.sr
	const subj = "orders-t.OrderPlaced"

	if _, err := cl.SchemaByID(ctx, 1); errCode(err) != 40403 {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := cl.SubjectVersions(ctx, subj); errCode(err) != 40401 {
		t.Fatalf("unknown subject: %v", err)
	}

	ss1, err := cl.CreateSchema(ctx, subj, avro(orderV1))
	if err != nil {
		t.Fatal(err)
	}
	if ss1.ID != 1 || ss1.Version != 1 || ss1.Subject != subj {
		t.Fatalf("first registration = %+v", ss1)
	}
	if id, err := cl.RegisterSchema(ctx, subj, avro(orderV1), -1, -1); err != nil || id != 1 {
		t.Fatalf("same schema again = %d, %v; want id 1", id, err)
	}
	// Whitespace does not make a new schema.
	if id, err := cl.RegisterSchema(ctx, subj, avro(strings.ReplaceAll(orderV1, "\n\t\t", " ")), -1, -1); err != nil || id != 1 {
		t.Fatalf("same schema, other whitespace = %d, %v; want id 1", id, err)
	}
	// Nor does another attribute order (as Java's Schema.toString sends it).
	reordered := `{"namespace":"t","fields":[{"type":"string","name":"orderId"},{"type":"long","name":"amountCents"}],"name":"OrderPlaced","type":"record"}`
	if id, err := cl.RegisterSchema(ctx, subj, avro(reordered), -1, -1); err != nil || id != 1 {
		t.Fatalf("same schema, other attribute order = %d, %v; want id 1", id, err)
	}
	if found, err := cl.LookupSchema(ctx, subj, avro(reordered)); err != nil || found.ID != 1 {
		t.Fatalf("lookup with another attribute order = %+v, %v", found, err)
	}
	got, err := cl.SchemaByID(ctx, 1)
	if err != nil || !strings.Contains(got.Schema, `"name":"OrderPlaced"`) {
		t.Fatalf("by id = %+v, %v", got, err)
	}
	if text, err := cl.SchemaTextByID(ctx, 1); err != nil || !strings.HasPrefix(text, `{"type":"record"`) {
		t.Fatalf("raw by id = %q, %v", text, err)
	}

	res, err := cl.CheckCompatibility(ctx, subj, -1, avro(orderV2))
	if err != nil || !res.Is {
		t.Fatalf("v2 compatibility = %+v, %v", res, err)
	}
	ss2, err := cl.CreateSchema(ctx, subj, avro(orderV2))
	if err != nil || ss2.ID != 2 || ss2.Version != 2 {
		t.Fatalf("v2 = %+v, %v", ss2, err)
	}
	if vs, err := cl.SubjectVersions(ctx, subj); err != nil || fmt.Sprint(vs) != "[1 2]" {
		t.Fatalf("versions = %v, %v", vs, err)
	}
	if latest, err := cl.SchemaByVersion(ctx, subj, -1); err != nil || latest.Version != 2 || latest.ID != 2 {
		t.Fatalf("latest = %+v, %v", latest, err)
	}
	if v1, err := cl.SchemaByVersion(ctx, subj, 1); err != nil || v1.ID != 1 {
		t.Fatalf("version 1 = %+v, %v", v1, err)
	}
	if found, err := cl.LookupSchema(ctx, subj, avro(orderV1)); err != nil || found.Version != 1 || found.ID != 1 {
		t.Fatalf("lookup v1 = %+v, %v", found, err)
	}
	if _, err := cl.LookupSchema(ctx, subj, avro(orderRemoved)); errCode(err) != 40403 {
		t.Fatalf("lookup of an unregistered schema: %v", err)
	}
	if subjects, err := cl.Subjects(ctx); err != nil || fmt.Sprint(subjects) != "["+subj+"]" {
		t.Fatalf("subjects = %v, %v", subjects, err)
	}

	// Under the default BACKWARD: adding a field without a default and
	// changing a type are refused, naming the field; removing a field is fine.
	for _, tc := range []struct{ schema, field string }{
		{orderAddedNoDefault, `field "customerId" (string) was added without a default`},
		{orderChangedType, `field "amountCents" changed type from long (version 2) to string`},
	} {
		res, err := cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subj, -1, avro(tc.schema))
		if err != nil || res.Is || len(res.Messages) == 0 || !strings.Contains(res.Messages[0], tc.field) {
			t.Errorf("check = %+v, %v; want a message with %q", res, err, tc.field)
		}
		_, err = cl.RegisterSchema(ctx, subj, avro(tc.schema), -1, -1)
		var re *sr.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 409 || re.ErrorCode != 409 || !strings.Contains(re.Message, tc.field) {
			t.Errorf("register = %v; want 409 naming %s", err, tc.field)
		}
	}

	// Config: global and per subject.
	if r := cl.Compatibility(ctx); r[0].Err != nil || r[0].Level != sr.CompatBackward {
		t.Fatalf("global level = %+v", r[0])
	}
	if r := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatFull}, subj); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if r := cl.Compatibility(ctx, subj); r[0].Err != nil || r[0].Level != sr.CompatFull {
		t.Fatalf("subject level = %+v", r[0])
	}
	// Under FULL, removing a field without a default is refused too.
	_, err = cl.RegisterSchema(ctx, subj, avro(orderRemoved), -1, -1)
	if errCode(err) != 409 || !strings.Contains(err.Error(), `field "amountCents" (long) was removed, and version 2 has no default for it`) {
		t.Fatalf("FULL, removed field: %v", err)
	}
	if r := cl.ResetCompatibility(ctx, subj); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if r := cl.Compatibility(sr.WithParams(ctx, sr.DefaultToGlobal), subj); r[0].Err != nil || r[0].Level != sr.CompatBackward {
		t.Fatalf("after reset = %+v", r[0])
	}
	if r := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if ss, err := cl.CreateSchema(ctx, subj, avro(orderChangedType)); err != nil || ss.Version != 3 || ss.ID != 3 {
		t.Fatalf("NONE lets anything in: %+v, %v", ss, err)
	}

	// The same schema under another subject keeps its id.
	if ss, err := cl.CreateSchema(ctx, "archive-t.OrderPlaced", avro(orderV1)); err != nil || ss.ID != 1 || ss.Version != 1 {
		t.Fatalf("other subject = %+v, %v", ss, err)
	}
	usages, err := cl.SchemaVersionsByID(ctx, 1)
	if err != nil || len(usages) != 2 {
		t.Fatalf("usages of id 1 = %+v, %v", usages, err)
	}

	// Soft delete, then register again: a new version, the same id.
	if vs, err := cl.DeleteSubject(ctx, "archive-t.OrderPlaced", sr.SoftDelete); err != nil || fmt.Sprint(vs) != "[1]" {
		t.Fatalf("delete = %v, %v", vs, err)
	}
	if _, err := cl.SubjectVersions(ctx, "archive-t.OrderPlaced"); errCode(err) != 40401 {
		t.Fatalf("versions after delete: %v", err)
	}
	if vs, err := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), "archive-t.OrderPlaced"); err != nil || fmt.Sprint(vs) != "[1]" {
		t.Fatalf("versions with deleted = %v, %v", vs, err)
	}
	if ss, err := cl.CreateSchema(ctx, "archive-t.OrderPlaced", avro(orderV1)); err != nil || ss.ID != 1 || ss.Version != 2 {
		t.Fatalf("re-register after delete = %+v, %v", ss, err)
	}
}

// TestRestart: a new server on the same cluster has everything.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	a := start(t, c)
	if _, err := a.sr.CreateSchema(ctx, "orders-t.OrderPlaced", avro(orderV1)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.sr.CreateSchema(ctx, "orders-t.OrderPlaced", avro(orderV2)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.sr.CreateSchema(ctx, "gone-t.OrderPlaced", avro(orderRemoved)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.sr.DeleteSubject(ctx, "gone-t.OrderPlaced", sr.SoftDelete); err != nil {
		t.Fatal(err)
	}
	if r := a.sr.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatForwardTransitive}, "orders-t.OrderPlaced"); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	before := snapshot(t, a.sr)
	a.stop()

	b := start(t, c)
	if after := snapshot(t, b.sr); after != before {
		t.Fatalf("after restart:\n%s\nbefore:\n%s", after, before)
	}
	if r := b.sr.Compatibility(ctx, "orders-t.OrderPlaced"); r[0].Level != sr.CompatForwardTransitive {
		t.Fatalf("level after restart = %+v", r[0])
	}
	// New ids continue after the old ones.
	ss, err := b.sr.CreateSchema(ctx, "more-t.X", avro(`{"type":"record","name":"X","namespace":"t","fields":[]}`))
	if err != nil || ss.ID != 4 {
		t.Fatalf("next id = %+v, %v; want 4", ss, err)
	}
}

// TestTwoInstancesAgree registers through two instances at once, with
// overlapping schemas and subjects: both must end with the same ids, and
// every answer must be one both agree on.
func TestTwoInstancesAgree(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	a, b := start(t, c), start(t, c)
	// Unrelated records share subjects below: only ids are under test.
	if r := a.sr.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}

	type answer struct {
		subject string
		schema  string
		id      int
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	for w := range 6 {
		cl := a.sr
		if w%2 == 1 {
			cl = b.sr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				// Workers share subjects and schemas, so proposals collide.
				subject := fmt.Sprintf("s%d", (w+i)%3)
				schema := fmt.Sprintf(`{"type":"record","name":"R%d","fields":[]}`, (w*7+i)%11)
				id, err := cl.RegisterSchema(ctx, subject, avro(schema), -1, -1)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{subject, schema, id})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Each instance serves from memory what it has applied: the last
	// write through one reaches the other a moment later.
	sa, sb := snapshot(t, a.sr), snapshot(t, b.sr)
	for deadline := time.Now().Add(10 * time.Second); sa != sb && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		sa, sb = snapshot(t, a.sr), snapshot(t, b.sr)
	}
	if sa != sb {
		t.Fatalf("instances disagree 10 s after the last write:\nA:\n%s\nB:\n%s", sa, sb)
	}
	for _, ans := range answers {
		got, err := b.sr.LookupSchema(ctx, ans.subject, avro(ans.schema))
		if err != nil || got.ID != ans.id {
			t.Errorf("%s %s: answered id %d, registry says %+v %v", ans.subject, ans.schema, ans.id, got, err)
		}
	}
	// One id per distinct schema.
	ids := map[string]int{}
	for _, ans := range answers {
		if id, ok := ids[ans.schema]; ok && id != ans.id {
			t.Errorf("schema %s has ids %d and %d", ans.schema, id, ans.id)
		}
		ids[ans.schema] = ans.id
	}
	// And a third instance, started afterwards, agrees too.
	if sc := snapshot(t, start(t, c).sr); sc != sa {
		t.Fatalf("a late instance disagrees:\n%s\nwant:\n%s", sc, sa)
	}
}

// snapshot renders everything a registry knows, for comparison.
func snapshot(t *testing.T, cl *sr.Client) string {
	t.Helper()
	ctx := sr.WithParams(context.Background(), sr.ShowDeleted)
	subjects, err := cl.Subjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(subjects)
	var b strings.Builder
	for _, s := range subjects {
		versions, err := cl.SubjectVersions(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		live, _ := cl.SubjectVersions(context.Background(), s)
		for _, v := range versions {
			ss, err := cl.SchemaByVersion(ctx, s, v)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s v%d id%d live=%v %s\n", s, v, ss.ID, contains(live, v), ss.Schema.Schema)
		}
	}
	return b.String()
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestHTTPErrors checks status codes, Confluent error bodies and content
// types with plain HTTP, as a client in another language sees them.
func TestHTTPErrors(t *testing.T) {
	in := start(t, newCluster(t))
	do := func(method, path, body, ctype string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(method, in.http.URL+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("Content-Type")
	}
	schema := `{"schema":"{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"x\",\"type\":\"int\"}]}"}`
	if code, body, ct := do("POST", "/subjects/a/versions", schema, "application/json"); code != 200 || body != `{"id":1}` || ct != "application/vnd.schemaregistry.v1+json" {
		t.Fatalf("register with application/json = %d %s %s", code, body, ct)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/subjects/nope/versions", "", 404, `{"error_code":40401,"message":"Subject 'nope' not found."}`},
		{"GET", "/subjects/a/versions/7", "", 404, `"error_code":40402`},
		{"GET", "/subjects/a/versions/seven", "", 422, `"error_code":42202`},
		{"GET", "/schemas/ids/99", "", 404, `"error_code":40403`},
		{"POST", "/subjects/a", `{"schema":"\"string\""}`, 404, `"error_code":40403`},
		{"POST", "/subjects/a/versions", `{"schema":"{\"type\":\"record\"}"}`, 422, `"error_code":42201`},
		{"POST", "/subjects/a/versions", `{"schema":"{}","schemaType":"PROTOBUF"}`, 422, `Avro only`},
		{"POST", "/subjects/a/versions", `{"schema":"\"int\"","references":[{"name":"x","subject":"y","version":1}]}`, 422, `subject \"y\" has no version 1`},
		{"POST", "/subjects/a/versions", `{"schema":"\"int\"","references":[{"subject":"y","version":1}]}`, 422, `needs a name`},
		{"PUT", "/mode", `{"mode":"SIDEWAYS"}`, 422, `"error_code":42204`},
		{"GET", "/contexts", "", 200, `["."]`},
		{"GET", "/config/a", "", 404, `"error_code":40408`},
		{"POST", "/subjects/a/versions", `not json`, 400, `"error_code":400`},
		{"PUT", "/config", `{"compatibility":"SIDEWAYS"}`, 422, `"error_code":42203`},
		{"POST", "/subjects/a/versions", `{"schema":"{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"x\",\"type\":\"string\"}]}"}`, 409, `field \"x\" changed type from int (version 1) to string`},
		{"POST", "/compatibility/subjects/a/versions/latest", `{"schema":"{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"x\",\"type\":\"long\"}]}"}`, 200, `{"is_compatible":true,"messages":[]}`},
		{"POST", "/compatibility/subjects/new/versions", `{"schema":"\"int\""}`, 200, `"is_compatible":true`},
		{"GET", "/config/a?defaultToGlobal=false", "", 404, `"error_code":40408`},
		{"GET", "/subjects/a/versions/1/schema", "", 200, `{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}`},
		{"GET", "/schemas/ids/1/subjects", "", 200, `["a"]`},
		{"GET", "/schemas/types", "", 200, `["AVRO"]`},
		{"GET", "/", "", 200, `{}`},
	} {
		code, body, _ := do(tc.method, tc.path, tc.body, "application/vnd.schemaregistry.v1+json")
		if code != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s = %d %s; want %d with %s", tc.method, tc.path, code, body, tc.status, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := registry.New(registry.Config{DefaultLevel: "SOMETIMES"}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "no brokers") || !strings.Contains(err.Error(), "SOMETIMES") {
		t.Fatalf("err = %v; want both problems", err)
	}
}
