package registry

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	havro "github.com/hamba/avro/v2"
)

// The _schemas topic holds one JSON record per change. Keys say what the
// record is about, so compaction keeps the latest record per key:
//
//	{"troupe":1,"kind":"schema","subject":S,"version":V,"proposal":P}  value {"subject","version","id","schema","references"...}
//	{"troupe":1,"kind":"delete-subject","subject":S}                     value {"upTo":V}
//	{"troupe":1,"kind":"delete-version","subject":S,"version":V}         value {}
//	{"troupe":1,"kind":"purge","subject":S,"proposal":P}                 value {"versions":[V...]}
//	{"troupe":1,"kind":"config","subject":S}  ("" = global)              value {"compatibilityLevel":L}, null to remove
//	{"troupe":1,"kind":"mode","subject":S}    ("" = global)              value {"mode":M}, null to remove
//
// Schema records are proposals: the writer picks the version (its subject's
// last + 1, or the one given in IMPORT mode) and the id (the schema's
// existing id, the one given in IMPORT mode, or the largest + 1) from its
// own view, and every instance applies proposals in log order with the same
// rule: a proposal for the subject's next version (any free one, in IMPORT
// mode) wins, and a proposal for a taken slot, whose id is taken by another
// schema, or whose schema already has another id, loses. A losing record changes nothing;
// its writer sees that when it reads the record back and tries again from
// the newer state. So every instance, and every restart, derives the same
// ids from the same log.
//
// That holds after compaction too, because a schema record is never
// rewritten: each has its own key (the proposal id makes even two claims of
// one slot distinct keys), so compaction removes none and the order of
// winners and losers never changes. A purge (permanent deletion) has its
// own key as well, so it stays where it was written, between the versions
// it removed and any that reuse their numbers. Soft deletions and settings
// only move later in the log, where they mean the same thing: a soft
// deletion marks the versions that exist when it is applied (those it named
// exist from their schema record on until a purge that comes after the
// deletion was first written), and a setting is the latest one for its key.

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
	kindPurge         = "purge"
	kindConfig        = "config"
	kindMode          = "mode"
)

// Reference is a schema reference: for Avro, Name is the full name of a
// named type that version Version of Subject defines, and the referring
// schema may use that name as if it were defined in it.
type Reference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

type schemaValue struct {
	Subject    string          `json:"subject"`
	Version    int             `json:"version"`
	ID         int             `json:"id"`
	Schema     string          `json:"schema"`
	References []Reference     `json:"references,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	RuleSet    json.RawMessage `json:"ruleSet,omitempty"`
	// Import is set on a proposal made in IMPORT mode, which may claim any
	// free version; others claim the subject's last version + 1.
	Import bool `json:"import,omitempty"`
}

type deleteSubjectValue struct {
	UpTo int `json:"upTo"`
}

type purgeValue struct {
	Versions []int `json:"versions"`
}

type configValue struct {
	CompatibilityLevel Level `json:"compatibilityLevel"`
}

type modeValue struct {
	Mode Mode `json:"mode"`
}

// state is what the log says, applied record by record. It is owned by the
// Server and guarded by its mutex.
type state struct {
	subjects map[string]*subject
	byID     map[int]*stored
	idOf     map[string]int // schema identity -> id
	maxID    int
	global   Level // "" until set: the server's default applies
	mode     Mode  // "" until set: READWRITE
	applied  int64 // offset of the next record to apply
}

// stored is a schema with an id. It stays when every version using it is
// purged: ids are never reused, and registering the schema again gives it
// its id back.
type stored struct {
	id       int
	text     string // as first registered
	ident    string
	schema   havro.Schema // with its references resolved
	refs     []Reference
	deps     []int // the ids refs resolved to when it was registered, in order
	metadata json.RawMessage
	ruleSet  json.RawMessage
}

// identity is what makes two schema texts the same schema: the parsed
// schema's full JSON form (names qualified, attributes in a fixed order,
// docs, defaults and properties kept, referenced types inlined), and its
// references, metadata and rules, as Confluent's registry compares them.
// Whitespace and attribute order then do not make a new version (a Java
// client registers Avro's toString of the schema, not the .avsc text),
// while any change a reader could notice does.
func identity(sch havro.Schema, refs []Reference, metadata, ruleSet json.RawMessage) string {
	b, err := json.Marshal(sch)
	if err != nil {
		b = []byte(sch.String())
	}
	out := string(b)
	if len(refs) > 0 {
		r, _ := json.Marshal(refs)
		out += "\x00references:" + string(r)
	}
	if len(metadata) > 0 {
		out += "\x00metadata:" + string(metadata)
	}
	if len(ruleSet) > 0 {
		out += "\x00ruleSet:" + string(ruleSet)
	}
	return out
}

type subject struct {
	versions []*version // ascending by number; purged ones are removed
	level    Level      // "" = not set: the global level applies
	mode     Mode       // "" = not set: the global mode applies
}

type version struct {
	version int
	id      int
	deleted bool // soft-deleted
}

func newState() *state {
	return &state{subjects: map[string]*subject{}, byID: map[int]*stored{}, idOf: map[string]int{}}
}

// live returns the versions not deleted, oldest first.
func (sub *subject) live() []*version {
	var out []*version
	for _, v := range sub.versions {
		if !v.deleted {
			out = append(out, v)
		}
	}
	return out
}

// find returns version n, soft-deleted or not, or nil.
func (sub *subject) find(n int) *version {
	for _, v := range sub.versions {
		if v.version == n {
			return v
		}
	}
	return nil
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
		if sub := st.subjects[k.Subject]; sub != nil {
			for _, ver := range sub.versions {
				if ver.version <= v.UpTo {
					ver.deleted = true
				}
			}
		}
	case kindDeleteVersion:
		if sub := st.subjects[k.Subject]; sub != nil && value != nil {
			if ver := sub.find(k.Version); ver != nil {
				ver.deleted = true
			}
		}
	case kindPurge:
		var v purgeValue
		if value == nil {
			return nil
		}
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("offset %d: bad purge record: %w", offset, err)
		}
		st.purge(k.Subject, v.Versions)
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
	case kindMode:
		var mode Mode
		if value != nil {
			var v modeValue
			if err := json.Unmarshal(value, &v); err != nil {
				return fmt.Errorf("offset %d: bad mode record: %w", offset, err)
			}
			mode = v.Mode
		}
		if k.Subject == "" {
			st.mode = mode
		} else {
			st.subject(k.Subject).mode = mode
		}
	default:
		return fmt.Errorf("offset %d: unknown record kind %q; skipped", offset, k.Kind)
	}
	return nil
}

// applySchema applies a proposal by the rule in the comment at the top.
func (st *state) applySchema(v schemaValue, offset int64) error {
	sub := st.subject(v.Subject)
	if v.Version < 1 || sub.find(v.Version) != nil || (!v.Import && v.Version != sub.lastVersion()+1) {
		return nil // lost the slot to an earlier proposal
	}
	sch, deps, err := st.parse(v.Schema, v.References)
	if err != nil {
		return fmt.Errorf("offset %d: schema for %s version %d does not parse; skipped: %w", offset, v.Subject, v.Version, err)
	}
	ident := identity(sch, v.References, v.Metadata, v.RuleSet)
	if id, ok := st.idOf[ident]; ok && id != v.ID {
		return nil // the schema has another id
	}
	if s, ok := st.byID[v.ID]; ok && s.ident != ident {
		return nil // the id belongs to another schema
	}
	if _, ok := st.byID[v.ID]; !ok {
		st.byID[v.ID] = &stored{id: v.ID, text: v.Schema, ident: ident, schema: sch,
			refs: v.References, deps: deps, metadata: v.Metadata, ruleSet: v.RuleSet}
		st.idOf[ident] = v.ID
		st.maxID = max(st.maxID, v.ID)
	}
	i := sort.Search(len(sub.versions), func(i int) bool { return sub.versions[i].version > v.Version })
	sub.versions = append(sub.versions[:i], append([]*version{{version: v.Version, id: v.ID}}, sub.versions[i:]...)...)
	return nil
}

// purge removes versions of subject name for good, except those another
// schema refers to (the writer refused those; another instance may have
// written the reference meanwhile). A subject left without versions loses
// its compatibility level and mode, as in Confluent's registry.
func (st *state) purge(name string, versions []int) {
	sub := st.subjects[name]
	if sub == nil {
		return
	}
	// Latest first: a version may refer to an earlier one of its subject.
	versions = slices.Clone(versions)
	slices.SortFunc(versions, func(a, b int) int { return b - a })
	for _, n := range versions {
		if len(st.referrers(name, n, true)) > 0 {
			continue
		}
		for i, v := range sub.versions {
			if v.version == n {
				sub.versions = append(sub.versions[:i], sub.versions[i+1:]...)
				break
			}
		}
	}
	if len(sub.versions) == 0 {
		sub.level, sub.mode = "", ""
	}
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

// modeOf is the mode that applies to subject name ("" for the global one).
func (st *state) modeOf(name string) Mode {
	if sub := st.subjects[name]; name != "" && sub != nil && sub.mode != "" {
		return sub.mode
	}
	if st.mode != "" {
		return st.mode
	}
	return ReadWrite
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
		if v.id == id && (deleted || !v.deleted) {
			return v
		}
	}
	return nil
}

// usages returns the versions, in every subject, that use schema id:
// live ones, or soft-deleted ones too with deleted.
func (st *state) usages(id int, deleted bool) []subjectAndVersion {
	out := []subjectAndVersion{}
	for _, name := range st.subjectNames(true) {
		for _, v := range st.subjects[name].versions {
			if v.id == id && (deleted || !v.deleted) {
				out = append(out, subjectAndVersion{name, v.version})
			}
		}
	}
	return out
}

// referrers returns the ids of the schemas that refer to version n of
// subject name and are used by a live version (or by any version, with
// deleted), ascending: what must go before that version may.
func (st *state) referrers(name string, n int, deleted bool) []int {
	out := []int{}
	for id, s := range st.byID {
		for _, r := range s.refs {
			if r.Subject == name && r.Version == n && len(st.usages(id, deleted)) > 0 {
				out = append(out, id)
				break
			}
		}
	}
	sort.Ints(out)
	return out
}

// maxResolved bounds how many schemas one schema's references may pull in,
// transitively.
const maxResolved = 100

// resolve returns the ids refs name, and every schema those depend on,
// transitively, each once and after what it depends on: the order to parse
// them in. A reference names a version that exists (soft-deleted ones
// count).
func (st *state) resolve(refs []Reference) (deps []int, order []*stored, err error) {
	seen := map[int]bool{}
	var visit func(id int) error
	visit = func(id int) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		s := st.byID[id]
		if s == nil {
			return fmt.Errorf("schema id %d is missing", id)
		}
		for _, d := range s.deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		if order = append(order, s); len(order) > maxResolved {
			return fmt.Errorf("its references pull in more than %d schemas, the built-in registry's limit", maxResolved)
		}
		return nil
	}
	for _, r := range refs {
		sub := st.subjects[r.Subject]
		var v *version
		if sub != nil {
			v = sub.find(r.Version)
		}
		if v == nil {
			return nil, nil, fmt.Errorf("reference %q: subject %q has no version %d", quote(r.Name), quote(r.Subject), r.Version)
		}
		deps = append(deps, v.id)
		if err := visit(v.id); err != nil {
			return nil, nil, err
		}
	}
	return deps, order, nil
}

// parse parses text with its references resolved against the state.
func (st *state) parse(text string, refs []Reference) (havro.Schema, []int, error) {
	deps, order, err := st.resolve(refs)
	if err != nil {
		return nil, nil, err
	}
	texts := make([]string, len(order))
	for i, s := range order {
		texts[i] = s.text
	}
	sch, err := parse(text, texts...)
	return sch, deps, err
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
