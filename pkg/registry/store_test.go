package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

type logRecord struct{ key, value []byte }

func rec(t *testing.T, k recordKey, v any) logRecord {
	t.Helper()
	k.Troupe = 1
	kb, _ := json.Marshal(k)
	var vb []byte
	if v != nil {
		vb, _ = json.Marshal(v)
	}
	return logRecord{kb, vb}
}

func replay(t *testing.T, log []logRecord) *state {
	t.Helper()
	st := newState()
	for i, r := range log {
		_ = st.apply(r.key, r.value, int64(i))
	}
	return st
}

// compact keeps the last record of every key, in log order, as Kafka's
// log cleaner does.
func compact(log []logRecord) []logRecord {
	last := map[string]int{}
	for i, r := range log {
		last[string(r.key)] = i
	}
	var out []logRecord
	for i, r := range log {
		if last[string(r.key)] == i {
			out = append(out, r)
		}
	}
	return out
}

func dump(st *state) string {
	var b strings.Builder
	for _, name := range st.subjectNames(true) {
		sub := st.subjects[name]
		for _, v := range sub.versions {
			fmt.Fprintf(&b, "%s v%d id%d deleted=%v %s\n", name, v.version, v.id, v.deleted, st.byID[v.id].text)
		}
		fmt.Fprintf(&b, "%s level=%q\n", name, sub.level)
	}
	fmt.Fprintf(&b, "global=%q max=%d\n", st.global, st.maxID)
	return b.String()
}

const (
	sA = `{"type":"record","name":"A","fields":[]}`
	sB = `{"type":"record","name":"B","fields":[]}`
	sC = `{"type":"record","name":"C","fields":[]}`
)

// TestApplyRule: the first claim of a slot wins, conflicting ids lose, and
// losers change nothing.
func TestApplyRule(t *testing.T) {
	schema := func(subject string, version, id int, text, proposal string) logRecord {
		return rec(t, recordKey{Kind: kindSchema, Subject: subject, Version: version, Proposal: proposal},
			schemaValue{Subject: subject, Version: version, ID: id, Schema: text})
	}
	log := []logRecord{
		schema("x", 1, 1, sA, "p1"),
		schema("x", 1, 2, sB, "p2"), // loses: slot x/1 taken
		schema("y", 1, 1, sB, "p3"), // loses: id 1 is A's
		schema("y", 1, 2, sA, "p4"), // loses: A already has id 1
		schema("y", 1, 1, sA, "p5"), // wins: A keeps id 1 in another subject
		schema("x", 3, 3, sC, "p6"), // loses: the next slot of x is 2
		schema("x", 2, 2, sB, "p7"),
	}
	st := replay(t, log)
	want := "x v1 id1 deleted=false " + sA + "\nx v2 id2 deleted=false " + sB + "\nx level=\"\"\n" +
		"y v1 id1 deleted=false " + sA + "\ny level=\"\"\nglobal=\"\" max=2\n"
	if got := dump(st); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if p := st.proposal("x", sC, ident(t, sC)); p.Version != 3 || p.ID != 3 {
		t.Fatalf("next proposal = %+v", p)
	}
	if p := st.proposal("z", sB, ident(t, sB)); p.Version != 1 || p.ID != 2 {
		t.Fatalf("proposal of a known schema = %+v; want its id 2", p)
	}
}

// TestCompactionKeepsTheState replays a log with deletions, re-registrations
// and config changes before and after compaction: the state must be the same.
func TestCompactionKeepsTheState(t *testing.T) {
	schema := func(subject string, version, id int, text, proposal string) logRecord {
		return rec(t, recordKey{Kind: kindSchema, Subject: subject, Version: version, Proposal: proposal},
			schemaValue{Subject: subject, Version: version, ID: id, Schema: text})
	}
	del := func(subject string, upTo int) logRecord {
		return rec(t, recordKey{Kind: kindDeleteSubject, Subject: subject}, deleteSubjectValue{UpTo: upTo})
	}
	cfg := func(subject string, level Level) logRecord {
		if level == "" {
			return rec(t, recordKey{Kind: kindConfig, Subject: subject}, nil)
		}
		return rec(t, recordKey{Kind: kindConfig, Subject: subject}, configValue{CompatibilityLevel: level})
	}
	log := []logRecord{
		schema("x", 1, 1, sA, "p1"),
		schema("x", 1, 2, sB, "p2"), // a loser, kept forever
		cfg("", Full),
		del("x", 1),
		schema("x", 2, 1, sA, "p3"), // A again after the delete: a new version
		cfg("x", Forward),
		schema("x", 3, 2, sB, "p4"),
		del("x", 2), // supersedes the first delete
		rec(t, recordKey{Kind: kindDeleteVersion, Subject: "x", Version: 3}, struct{}{}),
		cfg("", None),
		cfg("x", ""), // back to the global level
		schema("y", 1, 3, sC, "p5"),
	}
	full, compacted := replay(t, log), replay(t, compact(log))
	if len(compact(log)) >= len(log) {
		t.Fatal("nothing was compacted; the test proves nothing")
	}
	if a, b := dump(full), dump(compacted); a != b {
		t.Fatalf("compaction changed the state:\nfull:\n%s\ncompacted:\n%s", a, b)
	}
	if got := full.level("x", Backward); got != None {
		t.Fatalf("level of x = %s, want the global NONE", got)
	}
	if live := full.subjects["x"].live(); len(live) != 0 {
		t.Fatalf("x has live versions %v", live)
	}
}

func TestApplySkipsForeignRecords(t *testing.T) {
	st := newState()
	if err := st.apply([]byte(`{"keytype":"SCHEMA","subject":"x","version":1,"magic":1}`), []byte(`{}`), 0); err == nil {
		t.Error("a Confluent record was applied silently")
	}
	if err := st.apply([]byte(`garbage`), nil, 1); err == nil {
		t.Error("garbage was applied silently")
	}
	if st.applied != 2 {
		t.Errorf("applied = %d; skipped records still advance the offset", st.applied)
	}
}

func ident(t *testing.T, text string) string {
	t.Helper()
	return identity(mustParse(t, text).schema, nil, nil, nil)
}

// Two texts of one schema (attribute order, whitespace, a namespace given
// apart or in the name) are one schema; a changed default is not.
func TestIdentity(t *testing.T) {
	a := ident(t, `{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"int","default":1}]}`)
	b := ident(t, `{ "fields": [ {"default": 1, "type": "int", "name": "a"} ], "name": "n.R", "type": "record" }`)
	c := ident(t, `{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"int","default":2}]}`)
	if a != b {
		t.Errorf("same schema, two identities:\n%s\n%s", a, b)
	}
	if a == c {
		t.Error("a changed default kept the identity")
	}
}

// TestPurgeKeepsTheState: permanent deletions free version numbers for
// reuse; soft deletions written again for a reused number move later in
// the log when compacted, and the state must not change.
func TestPurgeKeepsTheState(t *testing.T) {
	schema := func(subject string, version, id int, text, proposal string) logRecord {
		return rec(t, recordKey{Kind: kindSchema, Subject: subject, Version: version, Proposal: proposal},
			schemaValue{Subject: subject, Version: version, ID: id, Schema: text})
	}
	del := func(subject string, upTo int) logRecord {
		return rec(t, recordKey{Kind: kindDeleteSubject, Subject: subject}, deleteSubjectValue{UpTo: upTo})
	}
	delVersion := func(subject string, v int) logRecord {
		return rec(t, recordKey{Kind: kindDeleteVersion, Subject: subject, Version: v}, struct{}{})
	}
	purge := func(subject, proposal string, versions ...int) logRecord {
		return rec(t, recordKey{Kind: kindPurge, Subject: subject, Proposal: proposal}, purgeValue{Versions: versions})
	}
	log := []logRecord{
		schema("x", 1, 1, sA, "p1"),
		schema("x", 2, 2, sB, "p2"),
		rec(t, recordKey{Kind: kindConfig, Subject: "x"}, configValue{CompatibilityLevel: Full}),
		delVersion("x", 2),
		purge("x", "q1", 2),
		schema("x", 2, 3, sC, "p3"), // version 2 again, another schema
		del("x", 2),
		purge("x", "q2", 1, 2),      // the subject is gone, and its level with it
		schema("x", 1, 2, sB, "p4"), // B keeps its id
		schema("x", 2, 1, sA, "p5"),
		delVersion("x", 2), // supersedes the first: moves here
		del("x", 1),        // supersedes the first: moves here
		schema("x", 3, 3, sC, "p6"),
	}
	full, compacted := replay(t, log), replay(t, compact(log))
	if len(compact(log)) >= len(log) {
		t.Fatal("nothing was compacted; the test proves nothing")
	}
	a, b := dump(full), dump(compacted)
	if a != b {
		t.Fatalf("compaction changed the state:\nfull:\n%s\ncompacted:\n%s", a, b)
	}
	want := "x v1 id2 deleted=true " + sB + "\nx v2 id1 deleted=true " + sA + "\nx v3 id3 deleted=false " + sC + "\nx level=\"\"\nglobal=\"\" max=3\n"
	if a != want {
		t.Fatalf("got\n%s\nwant\n%s", a, want)
	}
}

// TestPurgeSparesReferenced: a purge of a version another schema refers to
// changes nothing, wherever it comes from.
func TestPurgeSparesReferenced(t *testing.T) {
	st := newState()
	apply := func(r logRecord) {
		t.Helper()
		if err := st.apply(r.key, r.value, st.applied); err != nil {
			t.Fatal(err)
		}
	}
	apply(rec(t, recordKey{Kind: kindSchema, Subject: "c", Version: 1, Proposal: "p1"}, schemaValue{Subject: "c", Version: 1, ID: 1, Schema: sA}))
	apply(rec(t, recordKey{Kind: kindSchema, Subject: "o", Version: 1, Proposal: "p2"}, schemaValue{Subject: "o", Version: 1, ID: 2,
		Schema: `{"type":"record","name":"O","fields":[{"name":"a","type":"A"}]}`, References: []Reference{{Name: "A", Subject: "c", Version: 1}}}))
	apply(rec(t, recordKey{Kind: kindPurge, Subject: "c", Proposal: "q"}, purgeValue{Versions: []int{1}}))
	if got := st.referrers("c", 1, true); len(st.subjects["c"].versions) != 1 || fmt.Sprint(got) != "[2]" {
		t.Fatalf("after the purge: versions %v, referrers %v", st.subjects["c"].versions, got)
	}
}
