package steptest

import (
	"context"
	"fmt"
	"sync"

	"github.com/troupehq/troupe/pkg/avro"
)

// Registry is an in-memory schema registry for tests: give it to
// avro.NewSerde instead of a registry client.
type Registry struct {
	mu       sync.Mutex
	subjects map[string][]int
	texts    []string // by id-1
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{subjects: map[string][]int{}} }

// Register registers schema under subject; the same text gets the same id.
func (r *Registry) Register(_ context.Context, subject, schema string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := 0
	for i, s := range r.texts {
		if s == schema {
			id = i + 1
		}
	}
	if id == 0 {
		r.texts = append(r.texts, schema)
		id = len(r.texts)
	}
	for _, have := range r.subjects[subject] {
		if have == id {
			return id, nil
		}
	}
	r.subjects[subject] = append(r.subjects[subject], id)
	return id, nil
}

// Lookup returns the id of schema under subject.
func (r *Registry) Lookup(_ context.Context, subject, schema string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range r.subjects[subject] {
		if r.texts[id-1] == schema {
			return id, nil
		}
	}
	return 0, fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
}

// SchemaByID returns the schema with id.
func (r *Registry) SchemaByID(_ context.Context, id int) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 1 || id > len(r.texts) {
		return "", fmt.Errorf("schema id %d: %w", id, avro.ErrUnknownSchema)
	}
	return r.texts[id-1], nil
}

// Latest returns the latest schema under subject.
func (r *Registry) Latest(_ context.Context, subject string) (int, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := r.subjects[subject]
	if len(ids) == 0 {
		return 0, "", fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
	}
	id := ids[len(ids)-1]
	return id, r.texts[id-1], nil
}
