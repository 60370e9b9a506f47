package avro

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"unsafe"

	havro "github.com/hamba/avro/v2"
)

// Serde encodes Go values and JSON documents to Avro in the Confluent wire
// format and decodes them back. It is safe for concurrent use; build one per
// process and share it.
type Serde struct {
	reg          Registry
	api          havro.API
	maxBytes     int
	maxItems     int
	autoRegister bool

	mu      sync.RWMutex
	byType  map[reflect.Type]*typeInfo
	byName  map[string]*typeInfo
	ids     map[subjectKey]*encodePlan // encode side: (topic, full name) -> id
	readers map[int]*readPlan          // decode side: writer id -> how to decode

	// fetchMu serialises registry round trips: a burst of records with a new
	// schema id makes one request, not one per record.
	fetchMu sync.Mutex

	writers  sync.Pool // *havro.Writer, reused across Encode calls
	decoders sync.Pool // *havro.Reader, reused across Decode calls
}

type typeInfo struct {
	fullName string
	typ      reflect.Type // nil for a schema registered without a Go type
	schema   havro.Schema
	text     string // the schema as sent to the registry (compact JSON)
}

type subjectKey struct{ topic, fullName string }

type encodePlan struct {
	id     int
	schema havro.Schema // the schema id stands for (the registered one, or the registry's latest for JSON)
}

type readPlan struct {
	fullName string
	writer   havro.Schema
	info     *typeInfo    // nil: no Go type registered for fullName
	schema   havro.Schema // writer resolved to info's reader schema
	err      error        // resolution failed: every value with this id fails the same way
}

// Option configures a Serde.
type Option func(*Serde)

// AutoRegister sets whether Encode registers a type's schema under the
// subject when the subject does not have it yet. Default true, which suits
// development and the CLI; in production, register schemas ahead of time
// (troupe schemas register, in CI) and pass AutoRegister(false) so that an
// unregistered or incompatible schema fails the producer instead of
// changing the registry.
func AutoRegister(on bool) Option { return func(s *Serde) { s.autoRegister = on } }

// Limits bounds what one decoded value may allocate: maxBytes for one string
// or bytes field, maxItems for one array or map. Defaults 8 MiB and 1<<20,
// above any sane event and far below what a corrupt length prefix would
// otherwise allocate. Change them only for unusually large events.
func Limits(maxBytes, maxItems int) Option {
	return func(s *Serde) { s.maxBytes, s.maxItems = maxBytes, maxItems }
}

const (
	defaultMaxBytes = 8 << 20
	defaultMaxItems = 1 << 20
)

func newAPI(maxBytes, maxItems int) havro.API {
	return havro.Config{
		TagKey:            "avro",
		BlockLength:       100,
		MaxByteSliceSize:  maxBytes,
		MaxSliceAllocSize: maxItems,
	}.Freeze()
}

// NewSerde returns a Serde that finds schemas in reg.
func NewSerde(reg Registry, opts ...Option) *Serde {
	s := &Serde{
		reg:          reg,
		maxBytes:     defaultMaxBytes,
		maxItems:     defaultMaxItems,
		autoRegister: true,
		byType:       make(map[reflect.Type]*typeInfo),
		byName:       make(map[string]*typeInfo),
		ids:          make(map[subjectKey]*encodePlan),
		readers:      make(map[int]*readPlan),
	}
	for _, o := range opts {
		o(s)
	}
	s.api = newAPI(s.maxBytes, s.maxItems)
	s.writers.New = func() any { return havro.NewWriter(nil, 512, havro.WithWriterConfig(s.api)) }
	s.decoders.New = func() any { return havro.NewReader(nil, 0, havro.WithReaderConfig(s.api)) }
	return s
}

// ParseSchema parses an Avro schema on its own, so that two versions of one
// record (same full name) parsed in one process do not see each other.
// Named types must be defined in the schema itself: references to other
// registry subjects are not supported.
//
// hamba/avro panics on some invalid schemas (v2.31.0: a default for an
// empty union, {"type":[],"default":null}); ParseSchema returns that as an
// error, since a schema may come from a file or from the registry.
func ParseSchema(text string) (sch havro.Schema, err error) {
	defer func() {
		if p := recover(); p != nil {
			sch, err = nil, fmt.Errorf("avro: the schema parser failed on it (%v); check its unions, defaults and names", p)
		}
	}()
	return havro.ParseWithCache(text, "", &havro.SchemaCache{})
}

// Register tells the Serde that the Go type of zero (a struct value or a
// pointer to one) is the Avro record defined by schema; the record's full
// name is read from the schema. Encode then accepts values of the type and
// Decode returns them. Struct fields map to Avro fields by their `avro` tag;
// a long with logicalType timestamp-millis maps to time.Time.
//
// zero may be nil: the schema is then known by name only (for EncodeJSON,
// and Decode returns a map[string]any).
//
// Register checks that the type and the schema fit by encoding and decoding
// a zero value. Registering the same type and schema again is a no-op.
func (s *Serde) Register(zero any, schema string) error {
	sch, err := ParseSchema(schema)
	if err != nil {
		return fmt.Errorf("register: parse schema: %w", err)
	}
	rec, ok := sch.(*havro.RecordSchema)
	if !ok {
		return fmt.Errorf("register: schema is a %s, want a record", sch.Type())
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(schema)); err != nil {
		// ParseSchema accepted it, so this is a bare name like "string"; keep it.
		compact.Reset()
		compact.WriteString(schema)
	}
	info := &typeInfo{fullName: rec.FullName(), schema: sch, text: compact.String()}
	if zero != nil {
		t := reflect.TypeOf(zero)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return fmt.Errorf("register %s: Go type %s is not a struct", info.fullName, t)
		}
		info.typ = t
		if err := s.checkFit(info); err != nil {
			return err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byName[info.fullName]; ok {
		if old.typ == info.typ && old.text == info.text {
			return nil
		}
		return fmt.Errorf("register %s: already registered (Go type %v); a full name maps to one Go type and schema per Serde", info.fullName, old.typ)
	}
	if info.typ != nil {
		if old, ok := s.byType[info.typ]; ok {
			return fmt.Errorf("register %s: Go type %s is already registered as %s", info.fullName, info.typ, old.fullName)
		}
		s.byType[info.typ] = info
	}
	s.byName[info.fullName] = info
	// Plans resolved before this registration may have found no Go type.
	clear(s.readers)
	return nil
}

// checkFit encodes a zero value of info's type and decodes it back, so that a
// struct that does not match its schema fails at Register, not on the first
// record.
func (s *Serde) checkFit(info *typeInfo) error {
	zero := reflect.New(info.typ)
	b, err := s.api.Marshal(info.schema, zero.Interface())
	if err != nil {
		return fmt.Errorf("register %s: Go type %s does not fit the schema: %w", info.fullName, info.typ, err)
	}
	if err := s.api.Unmarshal(info.schema, b, reflect.New(info.typ).Interface()); err != nil {
		return fmt.Errorf("register %s: Go type %s cannot be decoded from the schema: %w", info.fullName, info.typ, err)
	}
	return nil
}

// TypeName returns the Avro full name registered for the Go type of v (a
// value or a pointer to one).
func (s *Serde) TypeName(v any) (string, error) {
	info, err := s.typeOf(v)
	if err != nil {
		return "", err
	}
	return info.fullName, nil
}

// Types returns the full names of the registered records.
func (s *Serde) Types() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	return names
}

func (s *Serde) typeOf(v any) (*typeInfo, error) {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil, errors.New("avro: nil value has no type")
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s.mu.RLock()
	info := s.byType[t]
	s.mu.RUnlock()
	if info == nil {
		return nil, fmt.Errorf("avro: Go type %s is not registered (call Serde.Register with its schema)", t)
	}
	return info, nil
}

// Encode returns v (a registered type, or a pointer to one) as Avro in the
// wire format, with the schema id of its type under the subject
// <topic>-<full name>. The first Encode of a type for a topic asks the
// registry for the id (registering the schema if AutoRegister is on); later
// ones use the cached id.
func (s *Serde) Encode(ctx context.Context, topic string, v any) ([]byte, error) {
	info, err := s.typeOf(v)
	if err != nil {
		return nil, err
	}
	plan, err := s.encodePlan(ctx, topic, info)
	if err != nil {
		return nil, err
	}
	w := s.writers.Get().(*havro.Writer)
	w.Reset(nil)
	w.Error = nil
	_, _ = w.Write(AppendHeader(scratchHeader(), plan.id))
	w.WriteVal(plan.schema, v)
	if err := w.Error; err != nil {
		s.writers.Put(w)
		return nil, fmt.Errorf("encode %s for topic %s: %w", info.fullName, topic, err)
	}
	out := make([]byte, len(w.Buffer()))
	copy(out, w.Buffer())
	if cap(w.Buffer()) <= 64<<10 { // do not pin one huge event's buffer in the pool
		s.writers.Put(w)
	}
	return out, nil
}

// scratchHeader returns an empty slice with room for the header, on the
// stack.
func scratchHeader() []byte {
	var b [HeaderSize]byte
	return b[:0]
}

func (s *Serde) encodePlan(ctx context.Context, topic string, info *typeInfo) (*encodePlan, error) {
	key := subjectKey{topic, info.fullName}
	s.mu.RLock()
	plan := s.ids[key]
	s.mu.RUnlock()
	if plan != nil {
		return plan, nil
	}

	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	s.mu.RLock()
	plan = s.ids[key]
	s.mu.RUnlock()
	if plan != nil {
		return plan, nil
	}
	subject := Subject(topic, info.fullName)
	var id int
	var err error
	if s.autoRegister {
		id, err = s.reg.Register(ctx, subject, info.text)
	} else {
		id, err = s.reg.Lookup(ctx, subject, info.text)
		if errors.Is(err, ErrUnknownSchema) {
			err = fmt.Errorf("%w (auto-register is off: register it with 'troupe schemas register')", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("schema id for %s: %w", subject, err)
	}
	plan = &encodePlan{id: id, schema: info.schema}
	s.mu.Lock()
	s.ids[key] = plan
	s.mu.Unlock()
	return plan, nil
}

// Decode reads a wire-format value. It returns the writer's record full name
// and a value (not a pointer) of the Go type registered for that name, read
// through the registered reader schema: fields the writer lacks take their
// defaults, fields the reader lacks are skipped. A type registered without a
// Go type decodes to map[string]any.
//
// A value that cannot be decoded gives a *DecodeError (wrapping ErrBadMagic,
// ErrUnknownSchema, ErrUnknownType or the Avro error); fullName is set
// whenever the writer schema was found. An unreachable registry gives an
// error wrapping ErrRegistryUnavailable instead.
func (s *Serde) Decode(ctx context.Context, value []byte) (fullName string, v any, err error) {
	id, payload, err := SplitHeader(value)
	if err != nil {
		return "", nil, &DecodeError{SchemaID: -1, Err: err}
	}
	plan, err := s.readPlan(ctx, id)
	if err != nil {
		return "", nil, err
	}
	if plan.err != nil {
		return plan.fullName, nil, &DecodeError{SchemaID: id, Type: plan.fullName, Err: plan.err}
	}
	if plan.info.typ == nil {
		var m any
		if err := s.unmarshal(plan.schema, payload, &m); err != nil {
			return plan.fullName, nil, &DecodeError{SchemaID: id, Type: plan.fullName, Err: err}
		}
		return plan.fullName, m, nil
	}
	ptr := reflect.New(plan.info.typ)
	if err := s.unmarshal(plan.schema, payload, ptr.Interface()); err != nil {
		return plan.fullName, nil, &DecodeError{SchemaID: id, Type: plan.fullName, Err: err}
	}
	return plan.fullName, valueAt(plan.info.typ, ptr.UnsafePointer()), nil
}

// WriterName returns the full name of the record a wire-format value was
// written as (its schema id's, cached like Decode's) without decoding the
// value. Errors are Decode's.
func (s *Serde) WriterName(ctx context.Context, value []byte) (string, error) {
	id, _, err := SplitHeader(value)
	if err != nil {
		return "", &DecodeError{SchemaID: -1, Err: err}
	}
	plan, err := s.readPlan(ctx, id)
	if err != nil {
		return "", err
	}
	return plan.fullName, nil
}

// unmarshal decodes payload into ptr. Unlike hamba's Unmarshal, which is
// made for streams and takes an end of input between two fields for success,
// running out of bytes anywhere is an error here: a value is one whole
// record.
func (s *Serde) unmarshal(schema havro.Schema, payload []byte, ptr any) error {
	r := s.decoders.Get().(*havro.Reader)
	r.Reset(payload)
	r.Error = nil
	r.ReadVal(schema, ptr)
	err := r.Error
	r.Reset(nil)
	s.decoders.Put(r)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("value is truncated: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// readPlan returns how to decode values written with schema id: the cached
// plan, or a new one from the registry.
func (s *Serde) readPlan(ctx context.Context, id int) (*readPlan, error) {
	s.mu.RLock()
	plan := s.readers[id]
	s.mu.RUnlock()
	if plan != nil {
		return plan, nil
	}

	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	s.mu.RLock()
	plan = s.readers[id]
	s.mu.RUnlock()
	if plan != nil {
		return plan, nil
	}
	writer, err := s.writerSchema(ctx, id)
	if err != nil {
		return nil, err
	}
	plan = &readPlan{writer: writer}
	if named, ok := writer.(havro.NamedSchema); ok {
		plan.fullName = named.FullName()
	}
	s.mu.RLock()
	plan.info = s.byName[plan.fullName]
	s.mu.RUnlock()
	switch {
	case plan.info == nil:
		plan.err = fmt.Errorf("%w: %s (register a Go type for it, or skip it by its ce_type header)", ErrUnknownType, plan.fullName)
	case plan.info.schema.Fingerprint() == writer.Fingerprint():
		plan.schema = plan.info.schema
	default:
		// A fresh checker: hamba caches verdicts by canonical-form
		// fingerprints, which leave out defaults.
		plan.schema, err = havro.NewSchemaCompatibility().Resolve(plan.info.schema, writer)
		if err != nil {
			plan.err = fmt.Errorf("writer schema %d cannot be read as the registered %s: %w", id, plan.fullName, err)
		}
	}
	s.mu.Lock()
	s.readers[id] = plan
	s.mu.Unlock()
	return plan, nil
}

// writerSchema fetches and parses schema id. A schema the registry does not
// have is a *DecodeError: the value names an id that does not exist.
func (s *Serde) writerSchema(ctx context.Context, id int) (havro.Schema, error) {
	text, err := s.reg.SchemaByID(ctx, id)
	if err != nil {
		if errors.Is(err, ErrUnknownSchema) {
			return nil, &DecodeError{SchemaID: id, Err: err}
		}
		return nil, fmt.Errorf("fetch writer schema id %d: %w", id, err)
	}
	sch, err := ParseSchema(text)
	if err != nil {
		return nil, &DecodeError{SchemaID: id, Err: fmt.Errorf("registry schema %d does not parse: %w", id, err)}
	}
	return sch, nil
}

// valueAt returns *(*T)(p) as an interface without copying it: the
// interface's data word is p itself, exactly as if the runtime had boxed the
// value into the allocation p points at. This saves an allocation and a copy
// per decoded event. Pointer-shaped types keep the pointer itself in the
// data word, so they go through reflect.
func valueAt(t reflect.Type, p unsafe.Pointer) any {
	if pointerShaped(t) {
		return reflect.NewAt(t, p).Elem().Interface()
	}
	type eface struct{ typ, data unsafe.Pointer }
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ = (*eface)(unsafe.Pointer(&t)).data // a reflect.Type's data word is the runtime type
	e.data = p
	return v
}

// pointerShaped reports whether values of t are stored directly in an
// interface's data word.
func pointerShaped(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return true
	case reflect.Struct:
		// A struct is pointer-shaped when it has exactly one non-zero-size
		// field and that field is pointer-shaped (zero-size fields may follow).
		var n int
		var last reflect.Type
		for i := range t.NumField() {
			if f := t.Field(i).Type; f.Size() > 0 {
				n++
				last = f
			}
		}
		return n == 1 && t.Size() == unsafe.Sizeof(uintptr(0)) && pointerShaped(last)
	case reflect.Array:
		return t.Len() == 1 && pointerShaped(t.Elem())
	}
	return false
}
