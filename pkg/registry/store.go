package registry

import (
	"encoding/json"
	"fmt"
	"sort"

	havro "github.com/hamba/avro/v2"
)

// The _schemas topic holds one JSON record per change. Keys say what the
// record is about, so compaction keeps the latest record per key:
//
//	{"troupe":1,"kind":"schema","subject":S,"version":V,"proposal":P}  value {"subject","version","id","schema"}
//	{"troupe":1,"kind":"delete-subject","subject":S}                     value {"upTo":V}
//	{"troupe":1,"kind":"delete-version","subject":S,"version":V}         value {}
//	{"troupe":1,"kind":"config","subject":S}  ("" = global)              value {"compatibilityLevel":L}, null to remove
//
// Schema records are proposals: the writer picks the version (its subject's
// last + 1) and the id (the schema's existing id, or the largest + 1) from
// its own view, and every instance applies proposals in log order with the
// same rule: the first proposal to claim a (subject, version) slot wins, and
// a proposal whose id is taken by another schema, or whose schema already has
// another id, loses. A losing record changes nothing; its writer sees that
// when it reads the record back and tries again from the newer state. So
// every instance, and every restart, derives the same ids from the same log.
//
// That holds after compaction too, because a schema record is never
// rewritten: each has its own key (the proposal id makes even two claims of
// one slot distinct keys), so compaction removes none and the order of
// winners and losers never changes. Deletions are separate records that
// only move later in the log, and they mean the same thing wherever they
// are ("versions up to V are deleted").

type recordKey struct {
	Troupe   int    `json:"troupe"`
	Kind     string `json:"kind"`
	Subject  string `json:"subject"`
	Version  int    `json:"version,omitempty"`
	Proposal string `json:"proposal,omitempty"`
}

const (
	kindSchema        = "schema"
	kindDeleteSubject = "delete-subject"
	kindDeleteVersion = "delete-version"
	kindConfig        = "config"
)

type schemaValue struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
}

type deleteSubjectValue struct {
	UpTo int `json:"upTo"`
}

type configValue struct {
	CompatibilityLevel Level `json:"compatibilityLevel"`
}

// state is what the log says, applied record by record. It is owned by the
// Server and guarded by its mutex.
type state struct {
	subjects map[string]*subject
	byID     map[int]*stored
	idOf     map[string]int // schema identity -> id
	maxID    int
	global   Level // "" until set: the server's default applies
	applied  int64 // offset of the next record to apply
}

type stored struct {
	id     int
	text   string // as first registered
	ident  string
	schema havro.Schema
}

// identity is what makes two schema texts the same schema: the parsed
// schema's full JSON form (names qualified, attributes in a fixed order,
// docs, defaults and properties kept). Whitespace and attribute order then
// do not make a new version (a Java client registers Avro's toString of the
// schema, not the .avsc text), while any change a reader could notice does.
func identity(sch havro.Schema) string {
	b, err := json.Marshal(sch)
	if err != nil {
		return sch.String()
	}
	return string(b)
}

type subject struct {
	versions    []*version // by version number, ascending, contiguous from 1
	deletedUpTo int
	level       Level // "" = not set: the global level applies
}

type version struct {
	version int
	id      int
	deleted bool // deleted on its own (DELETE /subjects/S/versions/V)
}

func newState() *state {
	return &state{subjects: map[string]*subject{}, byID: map[int]*stored{}, idOf: map[string]int{}}
}

func (sub *subject) isDeleted(v *version) bool { return v.deleted || v.version <= sub.deletedUpTo }

// live returns the versions not deleted, oldest first.
func (sub *subject) live() []*version {
	var out []*version
	for _, v := range sub.versions {
		if !sub.isDeleted(v) {
			out = append(out, v)
		}
	}
	return out
}

func (sub *subject) lastVersion() int {
	if len(sub.versions) == 0 {
		return 0
	}
	return sub.versions[len(sub.versions)-1].version
}

// apply applies one record of the log. Records it cannot read are skipped
// (and reported): a registry must keep serving what it can.
func (st *state) apply(key, value []byte, offset int64) error {
	st.applied = offset + 1
	var k recordKey
	if err := json.Unmarshal(key, &k); err != nil || k.Troupe != 1 {
		return fmt.Errorf("offset %d: key %q is not a troupe registry record; skipped", offset, key)
	}
	switch k.Kind {
	case kindSchema:
		if value == nil {
			return nil
		}
		var v schemaValue
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("offset %d: bad schema record: %w", offset, err)
		}
		return st.applySchema(v, offset)
	case kindDeleteSubject:
		var v deleteSubjectValue
		if value != nil {
			if err := json.Unmarshal(value, &v); err != nil {
				return fmt.Errorf("offset %d: bad delete record: %w", offset, err)
			}
		}
		if sub := st.subjects[k.Subject]; sub != nil && v.UpTo > sub.deletedUpTo {
			sub.deletedUpTo = v.UpTo
		}
	case kindDeleteVersion:
		if sub := st.subjects[k.Subject]; sub != nil && value != nil {
			for _, ver := range sub.versions {
				if ver.version == k.Version {
					ver.deleted = true
				}
			}
		}
	case kindConfig:
		var level Level
		if value != nil {
			var v configValue
			if err := json.Unmarshal(value, &v); err != nil {
				return fmt.Errorf("offset %d: bad config record: %w", offset, err)
			}
			level = v.CompatibilityLevel
		}
		if k.Subject == "" {
			st.global = level
		} else {
			st.subject(k.Subject).level = level
		}
	default:
		return fmt.Errorf("offset %d: unknown record kind %q; skipped", offset, k.Kind)
	}
	return nil
}

// applySchema applies a proposal by the rule in the comment at the top.
func (st *state) applySchema(v schemaValue, offset int64) error {
	sub := st.subject(v.Subject)
	if v.Version != sub.lastVersion()+1 {
		return nil // lost the slot to an earlier proposal
	}
	sch, err := parse(v.Schema)
	if err != nil {
		return fmt.Errorf("offset %d: schema for %s version %d does not parse; skipped: %w", offset, v.Subject, v.Version, err)
	}
	ident := identity(sch)
	if id, ok := st.idOf[ident]; ok && id != v.ID {
		return nil // the schema has another id
	}
	if s, ok := st.byID[v.ID]; ok && s.ident != ident {
		return nil // the id belongs to another schema
	}
	if _, ok := st.byID[v.ID]; !ok {
		st.byID[v.ID] = &stored{id: v.ID, text: v.Schema, ident: ident, schema: sch}
		st.idOf[ident] = v.ID
		st.maxID = max(st.maxID, v.ID)
	}
	sub.versions = append(sub.versions, &version{version: v.Version, id: v.ID})
	return nil
}

func (st *state) subject(name string) *subject {
	sub := st.subjects[name]
	if sub == nil {
		sub = &subject{}
		st.subjects[name] = sub
	}
	return sub
}

// subjectNames lists subjects with a live version (or any version, with
// deleted), sorted.
func (st *state) subjectNames(deleted bool) []string {
	names := []string{}
	for name, sub := range st.subjects {
		if len(sub.versions) > 0 && (deleted || len(sub.live()) > 0) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// level is the compatibility level that applies to subject name.
func (st *state) level(name string, def Level) Level {
	if sub := st.subjects[name]; sub != nil && sub.level != "" {
		return sub.level
	}
	if st.global != "" {
		return st.global
	}
	return def
}

// versionOf finds subject name's version of the schema with identity ident
// among live versions (or all, with deleted).
func (st *state) versionOf(name, ident string, deleted bool) *version {
	sub := st.subjects[name]
	id, ok := st.idOf[ident]
	if sub == nil || !ok {
		return nil
	}
	for _, v := range sub.versions {
		if v.id == id && (deleted || !sub.isDeleted(v)) {
			return v
		}
	}
	return nil
}

// proposal returns the record that would register text (of identity ident)
// under subject name as its next version.
func (st *state) proposal(name, text, ident string) schemaValue {
	id, ok := st.idOf[ident]
	if !ok {
		id = st.maxID + 1
	}
	var last int
	if sub := st.subjects[name]; sub != nil {
		last = sub.lastVersion()
	}
	return schemaValue{Subject: name, Version: last + 1, ID: id, Schema: text}
}
