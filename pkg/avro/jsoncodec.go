package avro

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	havro "github.com/hamba/avro/v2"
)

// This file converts between plain JSON and Avro binary, driven by a schema
// and without Go types: the CLI's produce and tail. It writes and reads the
// binary encoding directly (it is small: zig-zag varints, length-prefixed
// bytes, blocked arrays and maps, indexed unions), which keeps full control
// of the error messages: every error names the field path and what the
// schema expects there.

// ---- JSON -> Avro ----

func appendJSON(dst []byte, s havro.Schema, v any, path string) ([]byte, error) {
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	mismatch := func(problem string) error {
		return &FieldError{Path: path, Expected: describe(s), Problem: problem}
	}
	switch s.Type() {
	case havro.Null:
		if v != nil {
			return nil, mismatch(got(v))
		}
		return dst, nil
	case havro.Boolean:
		b, ok := v.(bool)
		if !ok {
			return nil, mismatch(got(v))
		}
		if b {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	case havro.Int:
		n, err := jsonInt(s, v, math.MinInt32, math.MaxInt32)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return appendLong(dst, n), nil
	case havro.Long:
		n, err := jsonInt(s, v, math.MinInt64, math.MaxInt64)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return appendLong(dst, n), nil
	case havro.Float:
		f, err := jsonFloat(v)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
	case havro.Double:
		f, err := jsonFloat(v)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case havro.String:
		str, ok := v.(string)
		if !ok {
			return nil, mismatch(got(v))
		}
		return appendBytes(dst, []byte(str)), nil
	case havro.Bytes:
		b, err := jsonBytes(s, v, -1)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return appendBytes(dst, b), nil
	case havro.Fixed:
		b, err := jsonBytes(s, v, s.(*havro.FixedSchema).Size())
		if err != nil {
			return nil, mismatch(err.Error())
		}
		return append(dst, b...), nil
	case havro.Enum:
		es := s.(*havro.EnumSchema)
		str, ok := v.(string)
		if !ok {
			return nil, mismatch(got(v))
		}
		i := slices.Index(es.Symbols(), str)
		if i < 0 {
			return nil, mismatch(got(v))
		}
		return appendLong(dst, int64(i)), nil
	case havro.Array:
		items := s.(*havro.ArraySchema).Items()
		arr, ok := v.([]any)
		if !ok {
			return nil, mismatch(got(v))
		}
		if len(arr) > 0 {
			dst = appendLong(dst, int64(len(arr)))
			for i, e := range arr {
				var err error
				if dst, err = appendJSON(dst, items, e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return nil, err
				}
			}
		}
		return append(dst, 0), nil
	case havro.Map:
		values := s.(*havro.MapSchema).Values()
		m, ok := v.(map[string]any)
		if !ok {
			return nil, mismatch(got(v))
		}
		if len(m) > 0 {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			dst = appendLong(dst, int64(len(m)))
			for _, k := range keys {
				dst = appendBytes(dst, []byte(k))
				var err error
				if dst, err = appendJSON(dst, values, m[k], join(path, k)); err != nil {
					return nil, err
				}
			}
		}
		return append(dst, 0), nil
	case havro.Record:
		return appendRecord(dst, s.(*havro.RecordSchema), v, path)
	case havro.Union:
		return appendUnion(dst, s.(*havro.UnionSchema), v, path)
	}
	return nil, mismatch("schema type " + string(s.Type()) + " is not supported")
}

func appendRecord(dst []byte, rs *havro.RecordSchema, v any, path string) ([]byte, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &FieldError{Path: path, Expected: describe(rs), Problem: got(v)}
	}
	fields := rs.Fields()
	for k := range m {
		if !slices.ContainsFunc(fields, func(f *havro.Field) bool { return f.Name() == k }) {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.Name()
			}
			return nil, &FieldError{Path: join(path, k), Problem: fmt.Sprintf("not a field of record %s (its fields: %s)", rs.FullName(), strings.Join(names, ", "))}
		}
	}
	for _, f := range fields {
		fp := join(path, f.Name())
		fv, ok := m[f.Name()]
		var err error
		switch {
		case ok:
			dst, err = appendJSON(dst, f.Type(), fv, fp)
		case f.HasDefault():
			dst, err = appendDefault(dst, f.Type(), f.Default(), fp)
		default:
			return nil, &FieldError{Path: fp, Expected: describe(f.Type()), Problem: "the field is missing and has no default"}
		}
		if err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// appendDefault writes a field's default. A union's default is a value of
// its first branch (Avro spec), in the Go form hamba parsed it into.
func appendDefault(dst []byte, s havro.Schema, def any, path string) ([]byte, error) {
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	if u, ok := s.(*havro.UnionSchema); ok {
		dst = appendLong(dst, 0)
		s = u.Types()[0]
	}
	return appendJSON(dst, s, def, path)
}

func appendUnion(dst []byte, us *havro.UnionSchema, v any, path string) ([]byte, error) {
	types := us.Types()
	if v == nil {
		for i, t := range types {
			if t.Type() == havro.Null {
				return appendLong(dst, int64(i)), nil
			}
		}
		return nil, &FieldError{Path: path, Expected: describe(us), Problem: got(v)}
	}
	// Avro's JSON encoding of a union: {"<branch name>": value}.
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for k, inner := range m {
			for i, t := range types {
				if slices.Contains(branchNames(t), k) {
					return appendJSON(appendLong(dst, int64(i)), t, inner, path)
				}
			}
		}
	}
	// The bare value: the first branch it fits.
	var firstErr error
	for i, t := range types {
		if t.Type() == havro.Null {
			continue
		}
		b, err := appendJSON(appendLong(dst, int64(i)), t, v, path)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	var fe *FieldError
	if errors.As(firstErr, &fe) && fe.Path != path {
		// The value has the shape of a branch but a field inside it is wrong:
		// that error is more useful than "no branch fits".
		return nil, firstErr
	}
	return nil, &FieldError{Path: path, Expected: describe(us), Problem: got(v)}
}

func branchNames(s havro.Schema) []string {
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	if n, ok := s.(havro.NamedSchema); ok {
		return []string{n.FullName(), n.Name()}
	}
	return []string{string(s.Type())}
}

func logical(s havro.Schema) (havro.LogicalType, havro.LogicalSchema) {
	if ls, ok := s.(havro.LogicalTypeSchema); ok && ls.Logical() != nil {
		return ls.Logical().Type(), ls.Logical()
	}
	return "", nil
}

// jsonInt reads an integer within [lo, hi]; logical types also accept their
// text form (timestamps, dates).
func jsonInt(s havro.Schema, v any, lo, hi int64) (int64, error) {
	lt, _ := logical(s)
	if str, ok := v.(string); ok {
		switch lt {
		case havro.TimestampMillis, havro.TimestampMicros, havro.LocalTimestampMillis, havro.LocalTimestampMicros:
			t, err := parseTime(str, lt == havro.LocalTimestampMillis || lt == havro.LocalTimestampMicros)
			if err != nil {
				return 0, err
			}
			if lt == havro.TimestampMicros || lt == havro.LocalTimestampMicros {
				return t.UnixMicro(), nil
			}
			return t.UnixMilli(), nil
		case havro.Date:
			t, err := time.Parse(time.DateOnly, str)
			if err != nil {
				return 0, fmt.Errorf("got %q, which is not YYYY-MM-DD", str)
			}
			return int64(math.Floor(float64(t.Unix()) / 86400)), nil
		}
		return 0, errors.New(got(v))
	}
	var n int64
	switch x := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(x), 64)
			if ferr != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
				return 0, errors.New(got(v))
			}
			i = int64(f)
		}
		n = i
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case float64:
		if x != math.Trunc(x) || x < -(1<<63) || x >= 1<<63 {
			return 0, errors.New(got(v))
		}
		n = int64(x)
	default:
		return 0, errors.New(got(v))
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("got %d, out of range", n)
	}
	return n, nil
}

func parseTime(s string, local bool) (time.Time, error) {
	if local {
		for _, layout := range []string{"2006-01-02T15:04:05.999999999", time.RFC3339Nano} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
	} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("got %q, which is not an RFC 3339 time like 2024-05-01T12:00:00Z", s)
}

func jsonFloat(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, errors.New(got(v))
		}
		return f, nil
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case string:
		switch x {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
	}
	return 0, errors.New(got(v))
}

// jsonBytes reads bytes (size -1) or a fixed of size: base64 text, or a
// decimal number when the schema is a decimal. Defaults arrive already
// decoded by hamba, as []byte or a byte array.
func jsonBytes(s havro.Schema, v any, size int) ([]byte, error) {
	var b []byte
	_, ls := logical(s)
	if dec, ok := ls.(*havro.DecimalLogicalSchema); ok {
		if _, isDefault := v.([]byte); !isDefault {
			var err error
			if b, err = decimalBytes(v, dec.Scale(), size); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
	switch x := v.(type) {
	case string:
		var err error
		if b, err = base64.StdEncoding.DecodeString(x); err != nil {
			return nil, fmt.Errorf("got string %q, which is not base64", truncate(x))
		}
	case []byte:
		b = x
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Array || rv.Type().Elem().Kind() != reflect.Uint8 {
			return nil, errors.New(got(v))
		}
		b = make([]byte, rv.Len())
		reflect.Copy(reflect.ValueOf(b), rv)
	}
	if size >= 0 && len(b) != size {
		return nil, fmt.Errorf("got %d bytes", len(b))
	}
	return b, nil
}

// decimalBytes encodes a decimal number as Avro does: the unscaled integer,
// two's complement, big-endian; sign-extended to size for a fixed.
func decimalBytes(v any, scale, size int) ([]byte, error) {
	var text string
	switch x := v.(type) {
	case json.Number:
		text = string(x)
	case string:
		text = x
	case float64:
		text = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return nil, errors.New(got(v))
	}
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return nil, fmt.Errorf("got %q, which is not a decimal number", truncate(text))
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)))
	if !r.IsInt() {
		return nil, fmt.Errorf("got %s, which has more than %d decimal places", text, scale)
	}
	n := r.Num()
	b := twosComplement(n)
	if size >= 0 {
		if len(b) > size {
			return nil, fmt.Errorf("got %s, too large for %d bytes", text, size)
		}
		pad := byte(0)
		if n.Sign() < 0 {
			pad = 0xff
		}
		for len(b) < size {
			b = append([]byte{pad}, b...)
		}
	}
	return b, nil
}

func twosComplement(n *big.Int) []byte {
	if n.Sign() >= 0 {
		b := n.Bytes()
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return b
	}
	// -n-1 has the bit length of the magnitude; one more byte holds the sign.
	k := new(big.Int).Sub(new(big.Int).Neg(n), big.NewInt(1)).BitLen()/8 + 1
	x := new(big.Int).Add(n, new(big.Int).Lsh(big.NewInt(1), uint(8*k)))
	b := x.Bytes()
	for len(b) < k {
		b = append([]byte{0xff}, b...)
	}
	return b
}

func fromTwosComplement(b []byte) *big.Int {
	n := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n
}

func appendLong(dst []byte, n int64) []byte {
	return binary.AppendUvarint(dst, uint64((n<<1)^(n>>63)))
}

func appendBytes(dst, b []byte) []byte {
	return append(appendLong(dst, int64(len(b))), b...)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// describe says what a schema expects, for error messages.
func describe(s havro.Schema) string {
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	lt, ls := logical(s)
	switch lt {
	case havro.TimestampMillis:
		return "long timestamp-millis (RFC 3339 time or epoch milliseconds)"
	case havro.TimestampMicros:
		return "long timestamp-micros (RFC 3339 time or epoch microseconds)"
	case havro.LocalTimestampMillis, havro.LocalTimestampMicros:
		return "long " + string(lt) + " (time without zone, like 2024-05-01T12:00:00)"
	case havro.Date:
		return "int date (YYYY-MM-DD or days since 1970-01-01)"
	case havro.Decimal:
		d := ls.(*havro.DecimalLogicalSchema)
		return fmt.Sprintf("%s decimal(%d,%d) (a number or a numeric string)", s.Type(), d.Precision(), d.Scale())
	}
	switch s := s.(type) {
	case *havro.RecordSchema:
		return "record " + s.FullName() + " (a JSON object)"
	case *havro.EnumSchema:
		return fmt.Sprintf("enum %s, one of [%s]", s.FullName(), strings.Join(s.Symbols(), " "))
	case *havro.FixedSchema:
		return fmt.Sprintf("fixed %s (%d bytes, base64)", s.FullName(), s.Size())
	case *havro.ArraySchema:
		return "array of " + describeShort(s.Items())
	case *havro.MapSchema:
		return "map of " + describeShort(s.Values())
	case *havro.UnionSchema:
		names := make([]string, len(s.Types()))
		for i, t := range s.Types() {
			names[i] = describeShort(t)
		}
		return "one of [" + strings.Join(names, ", ") + "]"
	}
	switch s.Type() {
	case havro.Bytes:
		return "bytes (base64)"
	case havro.Int:
		return "int (32-bit integer)"
	case havro.Long:
		return "long (64-bit integer)"
	}
	return string(s.Type())
}

func describeShort(s havro.Schema) string {
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	if n, ok := s.(havro.NamedSchema); ok {
		return n.FullName()
	}
	if lt, _ := logical(s); lt != "" {
		return string(s.Type()) + " " + string(lt)
	}
	if a, ok := s.(*havro.ArraySchema); ok {
		return "array of " + describeShort(a.Items())
	}
	if m, ok := s.(*havro.MapSchema); ok {
		return "map of " + describeShort(m.Values())
	}
	return string(s.Type())
}

// got describes a JSON value for error messages.
func got(v any) string {
	switch x := v.(type) {
	case nil:
		return "got null"
	case bool:
		return fmt.Sprintf("got %t", x)
	case json.Number:
		return "got number " + string(x)
	case string:
		return fmt.Sprintf("got string %q", truncate(x))
	case []any:
		return "got an array"
	case map[string]any:
		return "got an object"
	}
	return fmt.Sprintf("got %T", v)
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// ---- Avro -> JSON ----

// maxDepth bounds nesting, so that a recursive schema and a crafted value
// cannot exhaust the stack.
const maxDepth = 256

type binReader struct {
	b        []byte
	off      int
	maxBytes int
	maxItems int
}

var errTruncated = errors.New("value is truncated")

func (r *binReader) long() (int64, error) {
	u, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		if n == 0 {
			return 0, errTruncated
		}
		return 0, errors.New("varint overflows 64 bits")
	}
	r.off += n
	return int64(u>>1) ^ -int64(u&1), nil
}

func (r *binReader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, errTruncated
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *binReader) bytes() ([]byte, error) {
	n, err := r.long()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("negative length %d", n)
	}
	if n > int64(r.maxBytes) {
		return nil, fmt.Errorf("length %d is over the limit of %d", n, r.maxBytes)
	}
	return r.take(int(n))
}

// blockCount reads the next array or map block header: the item count, 0 at
// the end. A negative count is followed by the block's size in bytes.
func (r *binReader) blockCount() (int64, error) {
	n, err := r.long()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, errors.New("invalid block count")
		}
		n = -n
		if _, err := r.long(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (r *binReader) toJSON(dst []byte, s havro.Schema, path string, depth int) ([]byte, error) {
	b, err := r.value(dst, s, path, depth)
	if err != nil {
		var fe *FieldError
		if !errors.As(err, &fe) {
			err = &FieldError{Path: path, Expected: describe(s), Problem: err.Error()}
		}
	}
	return b, err
}

func (r *binReader) value(dst []byte, s havro.Schema, path string, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	lt, ls := logical(s)
	switch s.Type() {
	case havro.Null:
		return append(dst, "null"...), nil
	case havro.Boolean:
		b, err := r.take(1)
		if err != nil {
			return nil, err
		}
		switch b[0] {
		case 0:
			return append(dst, "false"...), nil
		case 1:
			return append(dst, "true"...), nil
		}
		return nil, fmt.Errorf("boolean byte is 0x%02x", b[0])
	case havro.Int, havro.Long:
		n, err := r.long()
		if err != nil {
			return nil, err
		}
		if s.Type() == havro.Int && (n < math.MinInt32 || n > math.MaxInt32) {
			return nil, fmt.Errorf("int %d is out of range", n)
		}
		switch lt {
		case havro.TimestampMillis:
			return appendJSONString(dst, time.UnixMilli(n).UTC().Format(time.RFC3339Nano)), nil
		case havro.TimestampMicros:
			return appendJSONString(dst, time.UnixMicro(n).UTC().Format(time.RFC3339Nano)), nil
		case havro.LocalTimestampMillis:
			return appendJSONString(dst, time.UnixMilli(n).UTC().Format("2006-01-02T15:04:05.999999999")), nil
		case havro.LocalTimestampMicros:
			return appendJSONString(dst, time.UnixMicro(n).UTC().Format("2006-01-02T15:04:05.999999999")), nil
		case havro.Date:
			return appendJSONString(dst, time.Unix(n*86400, 0).UTC().Format(time.DateOnly)), nil
		}
		return strconv.AppendInt(dst, n, 10), nil
	case havro.Float:
		b, err := r.take(4)
		if err != nil {
			return nil, err
		}
		return appendJSONFloat(dst, float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 32), nil
	case havro.Double:
		b, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return appendJSONFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(b)), 64), nil
	case havro.String:
		b, err := r.bytes()
		if err != nil {
			return nil, err
		}
		return appendJSONString(dst, string(b)), nil
	case havro.Bytes, havro.Fixed:
		var b []byte
		var err error
		if fs, ok := s.(*havro.FixedSchema); ok {
			b, err = r.take(fs.Size())
		} else {
			b, err = r.bytes()
		}
		if err != nil {
			return nil, err
		}
		if dec, ok := ls.(*havro.DecimalLogicalSchema); ok {
			rat := new(big.Rat).SetFrac(fromTwosComplement(b), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(dec.Scale())), nil))
			return appendJSONString(dst, rat.FloatString(dec.Scale())), nil
		}
		return appendJSONString(dst, base64.StdEncoding.EncodeToString(b)), nil
	case havro.Enum:
		n, err := r.long()
		if err != nil {
			return nil, err
		}
		syms := s.(*havro.EnumSchema).Symbols()
		if n < 0 || n >= int64(len(syms)) {
			return nil, fmt.Errorf("enum index %d is out of range", n)
		}
		return appendJSONString(dst, syms[n]), nil
	case havro.Array, havro.Map:
		return r.collection(dst, s, path, depth)
	case havro.Record:
		dst = append(dst, '{')
		for i, f := range s.(*havro.RecordSchema).Fields() {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, f.Name())
			dst = append(dst, ':')
			var err error
			if dst, err = r.toJSON(dst, f.Type(), join(path, f.Name()), depth+1); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case havro.Union:
		n, err := r.long()
		if err != nil {
			return nil, err
		}
		types := s.(*havro.UnionSchema).Types()
		if n < 0 || n >= int64(len(types)) {
			return nil, fmt.Errorf("union branch %d is out of range", n)
		}
		return r.toJSON(dst, types[n], path, depth+1)
	}
	return nil, fmt.Errorf("schema type %s is not supported", s.Type())
}

func (r *binReader) collection(dst []byte, s havro.Schema, path string, depth int) ([]byte, error) {
	var elem havro.Schema
	isMap := s.Type() == havro.Map
	if isMap {
		elem = s.(*havro.MapSchema).Values()
		dst = append(dst, '{')
	} else {
		elem = s.(*havro.ArraySchema).Items()
		dst = append(dst, '[')
	}
	zeroSize := !isMap && encodesToNothing(elem, 0)
	total := 0
	for {
		n, err := r.blockCount()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		// Every item takes at least one byte unless it encodes to nothing, so a
		// count beyond the remaining bytes is corrupt; do not loop on it.
		if (!zeroSize && n > int64(len(r.b)-r.off)) || n > int64(r.maxItems-total) {
			return nil, fmt.Errorf("block of %d items does not fit in the value", n)
		}
		for range n {
			if total > 0 {
				dst = append(dst, ',')
			}
			p := fmt.Sprintf("%s[%d]", path, total)
			if isMap {
				k, err := r.bytes()
				if err != nil {
					return nil, err
				}
				dst = appendJSONString(dst, string(k))
				dst = append(dst, ':')
				p = join(path, string(k))
			}
			if dst, err = r.toJSON(dst, elem, p, depth+1); err != nil {
				return nil, err
			}
			total++
		}
	}
	if isMap {
		return append(dst, '}'), nil
	}
	return append(dst, ']'), nil
}

// encodesToNothing reports whether values of s may take zero bytes (null, or
// records of such), so a block count cannot be bounded by the bytes left.
func encodesToNothing(s havro.Schema, depth int) bool {
	if depth > 16 {
		return true
	}
	if ref, ok := s.(*havro.RefSchema); ok {
		s = ref.Schema()
	}
	switch s.Type() {
	case havro.Null:
		return true
	case havro.Fixed:
		return s.(*havro.FixedSchema).Size() == 0
	case havro.Record:
		for _, f := range s.(*havro.RecordSchema).Fields() {
			if !encodesToNothing(f.Type(), depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

func appendJSONFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
