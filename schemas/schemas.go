// Package schemas holds the Avro schemas of troupe's events as .avsc files:
// the example order saga's events (namespace troupe.example.orders) and the
// coordinator's SagaEnded (namespace troupe.saga). The files are the source
// of truth: the Go types in pkg/example/orders are written to match them
// (a test checks every type against its file), `troupe schemas register
// --dir schemas/` puts them in the registry, and `troupe dev` embeds them.
//
// To add an event: write Name.avsc here (one record, every named type it
// uses defined inline), add its Go type, and register it. To change one, keep
// it compatible (add fields with defaults; never remove a field without a
// default or change a type) and run `troupe schemas check` first.
package schemas

import (
	"embed"

	"github.com/troupehq/troupe/pkg/avro"
)

// FS holds the .avsc files.
//
//go:embed *.avsc
var FS embed.FS

// All returns every schema in FS, sorted by full name.
func All() ([]avro.SchemaFile, error) {
	return avro.ReadSchemas(FS, ".")
}
