package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

const (
	customerV1 = `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"}]}`
	// Uses t.Customer, defined by the subject it references.
	orderWithCustomer = `{"type":"record","name":"Order","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"customer","type":"t.Customer"}]}`
	orderWithCustomerV2 = `{"type":"record","name":"Order","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"customer","type":"t.Customer"},
		{"name":"note","type":"string","default":""}]}`
	orderWithCustomerBad = `{"type":"record","name":"Order","namespace":"t","fields":[
		{"name":"orderId","type":"string"},
		{"name":"customer","type":"t.Customer"},
		{"name":"note","type":"string"}]}`
)

// The conformance tests below check, through franz-go's client, what
// Confluent's Schema Registry API documents and what a 2026 review found
// the built-in registry doing otherwise (issue 16): each failed before.

// TestReferences: an Avro schema may use a named type of another subject's
// version by referencing it; the references come back with the schema, and
// a referenced version cannot be deleted (42206).
func TestReferences(t *testing.T) {
	ctx := context.Background()
	cl := start(t, newCluster(t)).sr
	customer, err := cl.CreateSchema(ctx, "customer", avro(customerV1))
	if err != nil {
		t.Fatal(err)
	}
	refs := []sr.SchemaReference{{Name: "t.Customer", Subject: "customer", Version: 1}}
	order := sr.Schema{Schema: orderWithCustomer, Type: sr.TypeAvro, References: refs}

	if _, err := cl.CreateSchema(ctx, "orders-value", avro(orderWithCustomer)); errCode(err) != 42201 {
		t.Fatalf("without its reference, t.Customer is unknown: %v; want 42201", err)
	}
	bad := order
	bad.References = []sr.SchemaReference{{Name: "t.Customer", Subject: "customer", Version: 7}}
	if _, err := cl.CreateSchema(ctx, "orders-value", bad); errCode(err) != 42201 || !strings.Contains(err.Error(), "no version 7") {
		t.Fatalf("a reference to a missing version: %v; want 42201", err)
	}
	ss, err := cl.CreateSchema(ctx, "orders-value", order)
	if err != nil {
		t.Fatalf("register with a reference: %v", err)
	}
	if ss.ID == customer.ID || ss.Version != 1 || !reflect.DeepEqual(ss.References, refs) {
		t.Fatalf("registered = %+v", ss)
	}
	byID, err := cl.SchemaByID(ctx, ss.ID)
	if err != nil || !reflect.DeepEqual(byID.References, refs) {
		t.Fatalf("GET /schemas/ids/%d = %+v, %v; want its references", ss.ID, byID, err)
	}
	if again, err := cl.RegisterSchema(ctx, "orders-value", order, -1, -1); err != nil || again != ss.ID {
		t.Fatalf("the same schema and references again = %d, %v; want id %d", again, err, ss.ID)
	}
	if found, err := cl.LookupSchema(ctx, "orders-value", order); err != nil || found.ID != ss.ID {
		t.Fatalf("lookup with references = %+v, %v", found, err)
	}
	// The referenced type inlined is another schema (another id).
	inline := strings.Replace(orderWithCustomer, `"t.Customer"`, customerV1, 1)
	if other, err := cl.CreateSchema(ctx, "orders-inline", avro(inline)); err != nil || other.ID == ss.ID {
		t.Fatalf("the inlined schema = %+v, %v; want an id of its own", other, err)
	}
	// "latest" (-1) resolves to the version that is latest now.
	latest := order
	latest.References = []sr.SchemaReference{{Name: "t.Customer", Subject: "customer", Version: -1}}
	if ss2, err := cl.CreateSchema(ctx, "orders-latest", latest); err != nil || ss2.ID != ss.ID {
		t.Fatalf("a reference to the latest version = %+v, %v; want id %d", ss2, err, ss.ID)
	}
	users, err := cl.SchemaReferences(ctx, "customer", 1)
	var got []string
	for _, u := range users {
		got = append(got, u.Subject)
	}
	sort.Strings(got)
	if err != nil || fmt.Sprint(got) != "[orders-latest orders-value]" {
		t.Fatalf("referenced by = %v, %v", got, err)
	}

	// Compatibility is checked with the references resolved.
	if res, err := cl.CheckCompatibility(ctx, "orders-value", -1, sr.Schema{Schema: orderWithCustomerBad, References: refs}); err != nil || res.Is {
		t.Fatalf("a field without a default = %+v, %v; want incompatible", res, err)
	}
	if v2, err := cl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: orderWithCustomerV2, References: refs}); err != nil || v2.Version != 2 {
		t.Fatalf("v2 with references = %+v, %v", v2, err)
	}

	// Deleting what is referenced is refused.
	if err := cl.DeleteSchema(ctx, "customer", 1, sr.SoftDelete); errCode(err) != 42206 {
		t.Fatalf("delete a referenced version: %v; want 42206", err)
	}
	if _, err := cl.DeleteSubject(ctx, "customer", sr.SoftDelete); errCode(err) != 42206 {
		t.Fatalf("delete a referenced subject: %v; want 42206", err)
	}
	// Once its users are gone for good, it may go too.
	for _, s := range []string{"orders-value", "orders-latest"} {
		if _, err := cl.DeleteSubject(ctx, s, sr.SoftDelete); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.DeleteSchema(ctx, "customer", 1, sr.SoftDelete); err != nil {
		t.Fatalf("delete a version referenced only by deleted ones: %v", err)
	}
	if err := cl.DeleteSchema(ctx, "customer", 1, sr.HardDelete); errCode(err) != 42206 {
		t.Fatalf("permanently delete a version soft-deleted ones refer to: %v; want 42206", err)
	}
	for _, s := range []string{"orders-value", "orders-latest"} {
		if _, err := cl.DeleteSubject(ctx, s, sr.HardDelete); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.DeleteSchema(ctx, "customer", 1, sr.HardDelete); err != nil {
		t.Fatalf("permanently delete a version nothing refers to: %v", err)
	}
}

// TestDeletion: permanent deletion after a soft one, and Confluent's codes
// for each wrong order.
func TestDeletion(t *testing.T) {
	ctx := context.Background()
	in := start(t, newCluster(t))
	cl := in.sr
	const subj = "orders-t.OrderPlaced"
	for _, s := range []string{orderV1, orderV2} {
		if _, err := cl.CreateSchema(ctx, subj, avro(s)); err != nil {
			t.Fatal(err)
		}
	}
	ss3, err := cl.CreateSchema(ctx, "other", avro(orderRemoved))
	if err != nil {
		t.Fatal(err)
	}

	// A version.
	if err := cl.DeleteSchema(ctx, subj, 2, sr.HardDelete); errCode(err) != 40407 {
		t.Fatalf("permanent delete of a live version: %v; want 40407", err)
	}
	if err := cl.DeleteSchema(ctx, subj, 2, sr.SoftDelete); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteSchema(ctx, subj, 2, sr.SoftDelete); errCode(err) != 40406 {
		t.Fatalf("second soft delete of a version: %v; want 40406", err)
	}
	if err := cl.DeleteSchema(ctx, subj, 2, sr.HardDelete); err != nil {
		t.Fatalf("permanent delete after a soft one: %v", err)
	}
	if vs, err := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), subj); err != nil || fmt.Sprint(vs) != "[1]" {
		t.Fatalf("versions, deleted ones too, after a permanent delete = %v, %v", vs, err)
	}
	if _, err := cl.SchemaByID(ctx, 2); errCode(err) != 40403 {
		t.Fatalf("the id only that version used: %v; want 40403", err)
	}
	// Its number is free again, as in Confluent's registry.
	if ss, err := cl.CreateSchema(ctx, subj, avro(orderV2)); err != nil || ss.Version != 2 || ss.ID != 2 {
		t.Fatalf("register again = %+v, %v; want version 2, id 2", ss, err)
	}

	// A subject.
	if _, err := cl.DeleteSubject(ctx, subj, sr.HardDelete); errCode(err) != 40405 {
		t.Fatalf("permanent delete of a live subject: %v; want 40405", err)
	}
	if vs, err := cl.DeleteSubject(ctx, subj, sr.SoftDelete); err != nil || fmt.Sprint(vs) != "[1 2]" {
		t.Fatalf("soft delete = %v, %v", vs, err)
	}
	if _, err := cl.DeleteSubject(ctx, subj, sr.SoftDelete); errCode(err) != 40404 {
		t.Fatalf("second soft delete of a subject: %v; want 40404", err)
	}
	if vs, err := cl.DeleteSubject(ctx, subj, sr.HardDelete); err != nil || fmt.Sprint(vs) != "[1 2]" {
		t.Fatalf("permanent delete = %v, %v; want the versions", vs, err)
	}
	if _, err := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), subj); errCode(err) != 40401 {
		t.Fatalf("a permanently deleted subject, deleted ones too: %v; want 40401", err)
	}
	if _, err := cl.DeleteSubject(ctx, subj, sr.HardDelete); errCode(err) != 40401 {
		t.Fatalf("permanent delete of a gone subject: %v; want 40401", err)
	}
	if subjects, err := cl.Subjects(sr.WithParams(ctx, sr.ShowDeleted)); err != nil || fmt.Sprint(subjects) != "[other]" {
		t.Fatalf("subjects = %v, %v", subjects, err)
	}
	if s, err := cl.SchemaByID(ctx, ss3.ID); err != nil || !strings.Contains(s.Schema, `"fields":[{"name":"orderId","type":"string"}]`) {
		t.Fatalf("another subject's schema = %+v, %v", s, err)
	}
	// A restart derives the same.
	before := snapshot(t, cl)
	in.stop()
	if after := snapshot(t, start(t, in.cluster).sr); after != before {
		t.Fatalf("after restart:\n%s\nbefore:\n%s", after, before)
	}
}

// TestSettings: compatibility levels and modes per subject fall back to the
// global ones only when asked; READONLY refuses writes, IMPORT takes ids.
func TestSettings(t *testing.T) {
	ctx := context.Background()
	in := start(t, newCluster(t))
	cl := in.sr
	const subj = "orders-t.OrderPlaced"
	if _, err := cl.CreateSchema(ctx, subj, avro(orderV1)); err != nil {
		t.Fatal(err)
	}

	// Compatibility.
	if r := cl.Compatibility(ctx, subj); errCode(r[0].Err) != 40408 {
		t.Fatalf("level of a subject without one: %+v; want 40408", r[0])
	}
	if r := cl.Compatibility(sr.WithParams(ctx, sr.DefaultToGlobal), subj); r[0].Err != nil || r[0].Level != sr.CompatBackward {
		t.Fatalf("with defaultToGlobal = %+v", r[0])
	}
	if r := cl.ResetCompatibility(ctx, subj); errCode(r[0].Err) != 40401 {
		t.Fatalf("reset a level never set: %+v; want 40401", r[0])
	}
	for _, v := range []int{-1, 0} { // latest, and what registering checks
		res, err := cl.CheckCompatibility(ctx, "brand-new", map[int]int{-1: -1, 0: -2}[v], avro(orderV1))
		if err != nil || !res.Is {
			t.Fatalf("check against a new subject (version %d) = %+v, %v; want compatible", v, res, err)
		}
	}
	if _, err := cl.CheckCompatibility(ctx, subj, 9, avro(orderV1)); errCode(err) != 40402 {
		t.Fatalf("check against a missing version: %v; want 40402", err)
	}

	// Modes.
	if m := cl.Mode(ctx); m[0].Err != nil || m[0].Mode != sr.ModeReadWrite {
		t.Fatalf("global mode = %+v", m[0])
	}
	if m := cl.Mode(ctx, subj); errCode(m[0].Err) != 40409 {
		t.Fatalf("mode of a subject without one: %+v; want 40409", m[0])
	}
	if m := cl.Mode(sr.WithParams(ctx, sr.DefaultToGlobal), subj); m[0].Err != nil || m[0].Mode != sr.ModeReadWrite {
		t.Fatalf("with defaultToGlobal = %+v", m[0])
	}
	if m := cl.SetMode(ctx, sr.ModeReadOnly, subj); m[0].Err != nil || m[0].Mode != sr.ModeReadOnly {
		t.Fatalf("set READONLY = %+v", m[0])
	}
	if _, err := cl.CreateSchema(ctx, subj, avro(orderV2)); errCode(err) != 42205 {
		t.Fatalf("register in READONLY: %v; want 42205", err)
	}
	if _, err := cl.DeleteSubject(ctx, subj, sr.SoftDelete); errCode(err) != 42205 {
		t.Fatalf("delete in READONLY: %v; want 42205", err)
	}
	if _, err := cl.CreateSchema(ctx, "elsewhere", avro(orderV2)); err != nil {
		t.Fatalf("another subject stays writable: %v", err)
	}
	if m := cl.ResetMode(ctx, subj); m[0].Err != nil || m[0].Mode != sr.ModeReadOnly {
		t.Fatalf("reset = %+v; want what it was", m[0])
	}
	if _, err := cl.CreateSchema(ctx, subj, avro(orderV2)); err != nil {
		t.Fatalf("register after the reset: %v", err)
	}
	if m := cl.SetMode(ctx, sr.ModeReadOnly); m[0].Err != nil {
		t.Fatal(m[0].Err)
	}
	if _, err := cl.CreateSchema(ctx, "elsewhere-2", avro(orderV2)); errCode(err) != 42205 {
		t.Fatalf("register with the registry READONLY: %v; want 42205", err)
	}
	if r, _ := http.Get(in.http.URL + "/mode?x"); r == nil || r.StatusCode != 200 {
		t.Fatalf("GET /mode: %v", r)
	}

	// IMPORT: ids and versions from elsewhere, on an empty subject.
	if m := cl.SetMode(ctx, sr.ModeImport); errCode(m[0].Err) != 42205 {
		t.Fatalf("IMPORT with subjects present: %+v; want 42205", m[0])
	}
	if m := cl.SetMode(ctx, sr.ModeReadWrite); m[0].Err != nil {
		t.Fatal(m[0].Err)
	}
	if _, err := cl.CreateSchemaWithIDAndVersion(ctx, "imported", avro(orderRemoved), 100, 5); errCode(err) != 42205 {
		t.Fatalf("an id outside IMPORT mode: %v; want 42205", err)
	}
	if m := cl.SetMode(ctx, sr.ModeImport, "imported"); m[0].Err != nil {
		t.Fatal(m[0].Err)
	}
	ss, err := cl.CreateSchemaWithIDAndVersion(ctx, "imported", avro(orderRemoved), 100, 5)
	if err != nil || ss.ID != 100 || ss.Version != 5 {
		t.Fatalf("import = %+v, %v; want id 100 version 5", ss, err)
	}
	if _, err := cl.CreateSchemaWithIDAndVersion(ctx, "imported", avro(orderChangedType), 1, 6); errCode(err) != 42205 {
		t.Fatalf("import onto a taken id: %v; want 42205", err)
	}
	if ss, err := cl.CreateSchema(ctx, "after-import", avro(orderChangedType)); err != nil || ss.ID != 101 {
		t.Fatalf("next id after an import = %+v, %v; want 101", ss, err)
	}
}

// TestListings: GET /schemas, /contexts, the usages of an id, and a
// version found by its metadata.
func TestListings(t *testing.T) {
	ctx := context.Background()
	in := start(t, newCluster(t))
	cl := in.sr
	for _, r := range []struct{ subject, schema string }{
		{"orders-value", orderV1}, {"orders-value", orderV2}, {"archive-value", orderV1}, {"payments-value", orderRemoved},
	} {
		if _, err := cl.CreateSchema(ctx, r.subject, avro(r.schema)); err != nil {
			t.Fatal(err)
		}
	}
	if cs, err := cl.Contexts(ctx); err != nil || fmt.Sprint(cs) != "[.]" {
		t.Fatalf("contexts = %v, %v; want [.]", cs, err)
	}
	list := func(ctx context.Context) string {
		t.Helper()
		ss, err := cl.AllSchemas(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range ss {
			out = append(out, fmt.Sprintf("%s/%d=%d", s.Subject, s.Version, s.ID))
		}
		return strings.Join(out, " ")
	}
	if got := list(ctx); got != "archive-value/1=1 orders-value/1=1 orders-value/2=2 payments-value/1=3" {
		t.Fatalf("GET /schemas = %s", got)
	}
	if got := list(sr.WithParams(ctx, sr.SubjectPrefix("orders"), sr.LatestOnly)); got != "orders-value/2=2" {
		t.Fatalf("GET /schemas?subjectPrefix=orders&latestOnly = %s", got)
	}
	if got := list(sr.WithParams(ctx, sr.Offset(1), sr.Limit(2))); got != "orders-value/1=1 orders-value/2=2" {
		t.Fatalf("GET /schemas?offset=1&limit=2 = %s", got)
	}
	if subjects, err := cl.SubjectsByID(ctx, 1); err != nil || fmt.Sprint(subjects) != "[archive-value orders-value]" {
		t.Fatalf("subjects of id 1 = %v, %v", subjects, err)
	}
	if vs, err := cl.SchemaVersionsByID(ctx, 1); err != nil || fmt.Sprint(vs) != "[{archive-value 1} {orders-value 1}]" {
		t.Fatalf("versions of id 1 = %v, %v", vs, err)
	}

	md := sr.Schema{Schema: orderRemoved, SchemaMetadata: &sr.SchemaMetadata{Properties: map[string]string{"owner": "payments", "tier": "1"}}}
	withMD, err := cl.CreateSchema(ctx, "payments-value", md)
	if err != nil || withMD.Version != 2 || withMD.SchemaMetadata == nil || withMD.SchemaMetadata.Properties["owner"] != "payments" {
		t.Fatalf("register with metadata = %+v, %v; want a new version that shows it", withMD, err)
	}
	// franz-go has no call for it: what Confluent's Python client sends.
	get := func(query string) (status, code int, ss sr.SubjectSchema) {
		t.Helper()
		resp, err := http.Get(in.http.URL + "/subjects/payments-value/metadata?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Code int `json:"error_code"`
		}
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &ss)
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Code, ss
	}
	if status, _, ss := get("key=owner&value=payments&key=tier&value=1"); status != 200 || ss.Version != 2 || ss.ID != withMD.ID {
		t.Fatalf("by metadata = %d %+v", status, ss)
	}
	if status, code, _ := get("key=owner&value=nobody"); status != 404 || code != 40403 {
		t.Fatalf("by metadata nothing has: %d %d; want 404 40403", status, code)
	}
}
