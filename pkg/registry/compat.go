package registry

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	havro "github.com/hamba/avro/v2"
)

// Level is a compatibility level: which earlier versions a new schema of a
// subject is checked against, and in which direction.
type Level string

// The compatibility levels of the Confluent API.
const (
	// Backward: the new schema can read data written with the latest
	// version. Upgrade consumers first. The default.
	Backward Level = "BACKWARD"
	// BackwardTransitive: as Backward, against every version.
	BackwardTransitive Level = "BACKWARD_TRANSITIVE"
	// Forward: the latest version can read data written with the new schema.
	// Upgrade producers first.
	Forward Level = "FORWARD"
	// ForwardTransitive: as Forward, against every version.
	ForwardTransitive Level = "FORWARD_TRANSITIVE"
	// Full: both Backward and Forward.
	Full Level = "FULL"
	// FullTransitive: both, against every version.
	FullTransitive Level = "FULL_TRANSITIVE"
	// None: no check.
	None Level = "NONE"
)

// ParseLevel returns the level named s (case-insensitive).
func ParseLevel(s string) (Level, error) {
	l := Level(strings.ToUpper(strings.TrimSpace(s)))
	switch l {
	case Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive, None:
		return l, nil
	}
	return "", fmt.Errorf("unknown compatibility level %q (use BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE)", s)
}

func (l Level) transitive() bool { return strings.HasSuffix(string(l), "_TRANSITIVE") }
func (l Level) backward() bool {
	return strings.HasPrefix(string(l), "BACKWARD") || strings.HasPrefix(string(l), "FULL")
}
func (l Level) forward() bool {
	return strings.HasPrefix(string(l), "FORWARD") || strings.HasPrefix(string(l), "FULL")
}

// existing is one earlier version to check a candidate against.
type existing struct {
	version int
	schema  havro.Schema
}

// checker checks compatibility with hamba/avro's SchemaCompatibility (the
// authority on what Avro schema resolution accepts) and, when it refuses,
// walks both schemas to name the fields that broke it: hamba says "reader
// schema string not compatible with writer schema long", which does not say
// where.
//
// Each check uses a SchemaCompatibility of its own: hamba caches verdicts by
// the schemas' canonical-form fingerprints, and the canonical form leaves out
// defaults, so a shared cache would judge a field added without a default
// by an earlier check of the same field with one.
type checker struct {
	hc  *havro.SchemaCompatibility
	ctx context.Context // the check's; diff stops once it is done
}

func newChecker() *checker { return &checker{} }

// check returns why candidate may not follow versions (oldest first, live
// ones only) under level; nil means compatible. It stops with ctx's error
// once ctx is done, and turns a panic of hamba/avro into an error.
func (c *checker) check(ctx context.Context, level Level, candidate havro.Schema, versions []existing) (msgs []string, err error) {
	if level == None || len(versions) == 0 {
		return nil, nil
	}
	defer func() {
		if p := recover(); p != nil {
			msgs, err = nil, &apiError{http.StatusUnprocessableEntity, 42201, fmt.Sprintf("Invalid schema: the Avro compatibility check failed on it (%v)", p)}
		}
	}()
	c = &checker{hc: havro.NewSchemaCompatibility(), ctx: ctx}
	against := versions
	if !level.transitive() {
		against = versions[len(versions)-1:]
	}
	for i := len(against) - 1; i >= 0; i-- {
		old := against[i]
		if level.backward() {
			for _, p := range c.diff(candidate, old.schema, "") {
				msgs = append(msgs, p.explain(true, old.version, level))
			}
		}
		if level.forward() {
			for _, p := range c.diff(old.schema, candidate, "") {
				msgs = append(msgs, p.explain(false, old.version, level))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return msgs, nil
}

type problemKind int

const (
	missingField problemKind = iota
	typeChanged
	otherProblem
)

// problem is one reason reader cannot read writer's data.
type problem struct {
	kind           problemKind
	path           string
	reader, writer string // descriptions of the two types
	detail         string // hamba's words
}

// diff names what stops reader from reading data written with writer,
// empty when hamba finds them compatible.
func (c *checker) diff(reader, writer havro.Schema, path string) []problem {
	if c.ctx.Err() != nil {
		return nil // check reports it
	}
	err := c.hc.Compatible(reader, writer)
	if err == nil {
		return nil
	}
	r, w := deref(reader), deref(writer)
	leaf := func() []problem {
		kind := typeChanged
		if r.Type() == w.Type() && r.Type() != havro.Union {
			kind = otherProblem
		}
		return []problem{{kind: kind, path: path, reader: typeName(r), writer: typeName(w), detail: err.Error()}}
	}
	switch {
	case r.Type() == havro.Record && w.Type() == havro.Record:
		rr, wr := r.(*havro.RecordSchema), w.(*havro.RecordSchema)
		if rr.FullName() != wr.FullName() && !slices.Contains(rr.Aliases(), wr.FullName()) {
			return []problem{{kind: otherProblem, path: path, detail: fmt.Sprintf("record name changed between %s and %s", wr.FullName(), rr.FullName())}}
		}
		var out []problem
		for _, rf := range rr.Fields() {
			fp := joinPath(path, rf.Name())
			wf := fieldOf(wr, rf)
			if wf == nil {
				if !rf.HasDefault() {
					out = append(out, problem{kind: missingField, path: fp, reader: typeName(deref(rf.Type()))})
				}
				continue
			}
			out = append(out, c.diff(rf.Type(), wf.Type(), fp)...)
		}
		if len(out) == 0 {
			return []problem{{kind: otherProblem, path: path, detail: err.Error()}}
		}
		return out
	case r.Type() == havro.Array && w.Type() == havro.Array:
		if out := c.diff(r.(*havro.ArraySchema).Items(), w.(*havro.ArraySchema).Items(), path+"[]"); len(out) > 0 {
			return out
		}
	case r.Type() == havro.Map && w.Type() == havro.Map:
		if out := c.diff(r.(*havro.MapSchema).Values(), w.(*havro.MapSchema).Values(), path+"{}"); len(out) > 0 {
			return out
		}
	}
	return leaf()
}

func (p problem) explain(newIsReader bool, oldVersion int, level Level) string {
	field := fmt.Sprintf("field %q", p.path)
	if p.path == "" {
		field = "the record"
	}
	var msg string
	switch {
	case p.kind == missingField && newIsReader:
		msg = fmt.Sprintf("%s (%s) was added without a default: data written with version %d has no value for it; give it a default", field, p.reader, oldVersion)
	case p.kind == missingField:
		msg = fmt.Sprintf("%s (%s) was removed, and version %d has no default for it: consumers still on version %d cannot read new data; keep the field, or give it a default in version %d's successor first", field, p.reader, oldVersion, oldVersion, oldVersion)
	case p.kind == typeChanged && newIsReader:
		msg = fmt.Sprintf("%s changed type from %s (version %d) to %s, which cannot read it", field, p.writer, oldVersion, p.reader)
	case p.kind == typeChanged:
		msg = fmt.Sprintf("%s changed type from %s (version %d) to %s, which version %d cannot read", field, p.reader, oldVersion, p.writer, oldVersion)
	default:
		msg = fmt.Sprintf("%s: %s", field, p.detail)
	}
	dir := "the new schema must read data of version %d"
	if !newIsReader {
		dir = "version %d must read data of the new schema"
	}
	return fmt.Sprintf("%s (%s: "+dir+")", msg, level, oldVersion)
}

func fieldOf(rec *havro.RecordSchema, f *havro.Field) *havro.Field {
	for _, wf := range rec.Fields() {
		if wf.Name() == f.Name() || slices.Contains(f.Aliases(), wf.Name()) {
			return wf
		}
	}
	return nil
}

func deref(s havro.Schema) havro.Schema {
	if ref, ok := s.(*havro.RefSchema); ok {
		return ref.Schema()
	}
	return s
}

func typeName(s havro.Schema) string {
	s = deref(s)
	if n, ok := s.(havro.NamedSchema); ok {
		return string(s.Type()) + " " + n.FullName()
	}
	if ls, ok := s.(havro.LogicalTypeSchema); ok && ls.Logical() != nil {
		return string(s.Type()) + " " + string(ls.Logical().Type())
	}
	switch s := s.(type) {
	case *havro.ArraySchema:
		return "array of " + typeName(s.Items())
	case *havro.MapSchema:
		return "map of " + typeName(s.Values())
	case *havro.UnionSchema:
		names := make([]string, len(s.Types()))
		for i, t := range s.Types() {
			names[i] = typeName(t)
		}
		return "union [" + strings.Join(names, ", ") + "]"
	}
	return string(s.Type())
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
