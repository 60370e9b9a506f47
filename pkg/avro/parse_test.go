package avro_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/troupehq/troupe/pkg/avro"
)

// A schema that makes hamba/avro panic is an error naming the file, not a
// crash of `troupe schemas check` (issue 13).
func TestParseSchemaPanicIsAnError(t *testing.T) {
	const crasher = `{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":[],"default":null}]}`
	if sch, err := avro.ParseSchema(crasher); err == nil || sch != nil || !strings.Contains(err.Error(), "schema parser failed") {
		t.Fatalf("ParseSchema = %v, %v; want an error", sch, err)
	}
	fsys := fstest.MapFS{
		"schemas/bad.avsc":  {Data: []byte(crasher)},
		"schemas/good.avsc": {Data: []byte(`{"type":"record","name":"G","namespace":"t","fields":[{"name":"a","type":"int"}]}`)},
	}
	_, err := avro.ReadSchemas(fsys, "schemas")
	if err == nil || !strings.Contains(err.Error(), "schemas/bad.avsc: not a valid Avro schema") {
		t.Fatalf("ReadSchemas = %v; want an error naming schemas/bad.avsc", err)
	}
}
