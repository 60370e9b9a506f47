package avro

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"

	havro "github.com/hamba/avro/v2"
)

// SchemaFile is one Avro schema read from a .avsc file.
type SchemaFile struct {
	// Path is the file's path in the file system it was read from.
	Path string
	// FullName is the record's full name, namespace.Name.
	FullName string
	// Text is the schema as compact JSON: what is sent to the registry.
	Text string
}

// ReadSchemas reads every *.avsc file in dir of fsys (not its
// subdirectories), sorted by full name. Each file must hold one record
// schema that defines every named type it uses (registry references are not
// supported), and no two files may define the same record. Every problem is
// reported, each naming its file.
func ReadSchemas(fsys fs.FS, dir string) ([]SchemaFile, error) {
	matches, err := fs.Glob(fsys, path.Join(dir, "*.avsc"))
	if err != nil {
		return nil, err
	}
	if len(matches) == 0 {
		return nil, fmt.Errorf("no .avsc files in %s", dir)
	}
	var (
		files []SchemaFile
		errs  []error
		seen  = make(map[string]string)
	)
	for _, p := range matches {
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f, err := parseSchemaFile(p, raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, dup := seen[f.FullName]; dup {
			errs = append(errs, fmt.Errorf("%s: record %s is also defined in %s", p, f.FullName, other))
			continue
		}
		seen[f.FullName] = p
		files = append(files, f)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].FullName < files[j].FullName })
	return files, nil
}

func parseSchemaFile(p string, raw []byte) (SchemaFile, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return SchemaFile{}, fmt.Errorf("%s: not valid JSON: %w", p, err)
	}
	sch, err := ParseSchema(compact.String())
	if err != nil {
		return SchemaFile{}, fmt.Errorf("%s: not a valid Avro schema: %w", p, err)
	}
	rec, ok := sch.(*havro.RecordSchema)
	if !ok {
		return SchemaFile{}, fmt.Errorf("%s: the schema is a %s; troupe events are records", p, sch.Type())
	}
	return SchemaFile{Path: p, FullName: rec.FullName(), Text: compact.String()}, nil
}
