package registry

import (
	"context"
	"strings"
	"testing"

	havro "github.com/hamba/avro/v2"
)

func checkOK(t testing.TB, c *checker, level Level, candidate havro.Schema, versions []existing) []string {
	t.Helper()
	msgs, err := c.check(context.Background(), level, candidate, versions)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func mustParse(t testing.TB, s string) existing {
	t.Helper()
	sch, err := parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return existing{schema: sch}
}

const order = `{"type":"record","name":"Order","namespace":"n","fields":[
	{"name":"id","type":"string"},
	{"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
		{"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
	{"name":"shipTo","type":{"type":"record","name":"Addr","fields":[{"name":"country","type":"string"}]}},
	{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
	{"name":"note","type":["null","string"],"default":null}]}`

func TestCheckNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level Level
		old   string
		new   string
		want  []string // substrings, one per message; none = compatible
	}{
		{"identical", Full, order, order, nil},
		{"int to long is a promotion", Backward, order, strings.Replace(order, `"qty","type":"int"`, `"qty","type":"long"`, 1), nil},
		{"long to int is not", Forward, order, strings.Replace(order, `"qty","type":"int"`, `"qty","type":"long"`, 1),
			[]string{`field "items[].qty" changed type from int (version 1) to long, which version 1 cannot read`}},
		{"nested type change", Backward, order, strings.Replace(order, `"country","type":"string"`, `"country","type":"int"`, 1),
			[]string{`field "shipTo.country" changed type from string (version 1) to int, which cannot read it`}},
		{"added without default", Backward, order, strings.Replace(order, `{"name":"id","type":"string"},`, `{"name":"id","type":"string"},{"name":"customer","type":"string"},`, 1),
			[]string{`field "customer" (string) was added without a default`}},
		{"added with default", Full, order, strings.Replace(order, `{"name":"id","type":"string"},`, `{"name":"id","type":"string"},{"name":"customer","type":"string","default":""},`, 1), nil},
		{"removed without default, BACKWARD is fine", Backward, order, strings.Replace(order, `{"name":"id","type":"string"},`, ``, 1), nil},
		{"removed without default, FORWARD is not", Forward, order, strings.Replace(order, `{"name":"id","type":"string"},`, ``, 1),
			[]string{`field "id" (string) was removed, and version 1 has no default for it`}},
		{"enum symbol removed", Backward, order, strings.Replace(order, `"NEW","PAID"`, `"NEW"`, 1),
			[]string{`field "status": reader n.Status is missing symbol PAID`}},
		{"union narrowed", Backward, order, strings.Replace(order, `["null","string"],"default":null`, `"string","default":""`, 1),
			[]string{`field "note" changed type from union [null, string] (version 1) to string`}},
		{"two fields at once", Backward, order, strings.Replace(strings.Replace(order, `"country","type":"string"`, `"country","type":"int"`, 1), `"sku","type":"string"`, `"sku","type":"long"`, 1),
			[]string{`"items[].sku"`, `"shipTo.country"`}},
		{"renamed record", Backward, order, strings.Replace(order, `"name":"Order"`, `"name":"Purchase"`, 1),
			[]string{`record name changed between n.Order and n.Purchase`}},
		{"NONE checks nothing", None, order, `"string"`, nil},
		{"FULL reports both directions", Full, order, strings.Replace(order, `"qty","type":"int"`, `"qty","type":"string"`, 1),
			[]string{`(FULL: the new schema must read data of version 1)`, `(FULL: version 1 must read data of the new schema)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := mustParse(t, tc.old)
			old.version = 1
			msgs := checkOK(t, newChecker(), tc.level, mustParse(t, tc.new).schema, []existing{old})
			if len(msgs) != len(tc.want) {
				t.Fatalf("messages %q; want %d", msgs, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(msgs[i], w) {
					t.Errorf("message %q does not contain %q", msgs[i], w)
				}
			}
		})
	}
}

func TestCheckTransitive(t *testing.T) {
	v1 := mustParse(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`)
	v1.version = 1
	// v2 drops a; v3 brings a back as a string: fine against v2, not v1.
	v2 := mustParse(t, `{"type":"record","name":"R","fields":[]}`)
	v2.version = 2
	v3 := mustParse(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"string","default":""}]}`).schema
	c := newChecker()
	if msgs := checkOK(t, c, Backward, v3, []existing{v1, v2}); len(msgs) != 0 {
		t.Fatalf("BACKWARD (latest only): %q", msgs)
	}
	msgs := checkOK(t, c, BackwardTransitive, v3, []existing{v1, v2})
	if len(msgs) != 1 || !strings.Contains(msgs[0], `field "a" changed type from int (version 1) to string`) {
		t.Fatalf("BACKWARD_TRANSITIVE: %q", msgs)
	}
}

func TestParseLevel(t *testing.T) {
	for _, s := range []string{"backward", "FULL_TRANSITIVE", " none "} {
		if _, err := ParseLevel(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := ParseLevel("SIDEWAYS"); err == nil || !strings.Contains(err.Error(), "BACKWARD_TRANSITIVE") {
		t.Errorf("bad level: %v", err)
	}
}

// FuzzCheck: any schema text a client sends is parsed and checked against
// an existing version without panicking.
func FuzzCheck(f *testing.F) {
	f.Add(order)
	f.Add(`"string"`)
	f.Add(`{"type":"record","name":"Order","namespace":"n","fields":[{"name":"id","type":["null",{"type":"array","items":"Order"}]}]}`)
	f.Add(`{"type":"map","values":{"type":"enum","name":"E","symbols":["A"]}}`)
	// Found by this fuzzer: hamba/avro v2.31.0 panics on a default for an
	// empty union (testdata/fuzz/FuzzCheck keeps it too).
	f.Add(`{"type":"record","name":"R","fields":[{"name":"a","type":[],"default":null}]}`)
	old := mustParse(f, order)
	old.version = 1
	c := newChecker()
	f.Fuzz(func(t *testing.T, text string) {
		sch, err := parse(text)
		if err != nil {
			return
		}
		_, _ = c.check(context.Background(), FullTransitive, sch, []existing{old, {version: 2, schema: sch}})
	})
}

// A check of a field added with a default must not make a later check of
// the same field without one pass: hamba's verdict cache ignores defaults.
func TestCheckIsNotFooledByDefaults(t *testing.T) {
	old := mustParse(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`)
	old.version = 1
	withDefault := mustParse(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int","default":0}]}`).schema
	without := mustParse(t, `{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}`).schema
	c := newChecker()
	if msgs := checkOK(t, c, Backward, withDefault, []existing{old}); len(msgs) != 0 {
		t.Fatalf("with a default: %q", msgs)
	}
	if msgs := checkOK(t, c, Backward, without, []existing{old}); len(msgs) != 1 {
		t.Fatalf("without a default: %q; want one message", msgs)
	}
}
