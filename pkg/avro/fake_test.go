package avro_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/troupehq/troupe/pkg/avro"
)

// fakeRegistry is an in-memory avro.Registry that counts its calls.
type fakeRegistry struct {
	mu       sync.Mutex
	subjects map[string][]int
	texts    map[int]string
	calls    map[string]int
	down     bool
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{subjects: map[string][]int{}, texts: map[int]string{}, calls: map[string]int{}}
}

func (f *fakeRegistry) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeRegistry) enter(op string) error {
	f.calls[op]++
	if f.down {
		return fmt.Errorf("%s: %w: fake is down", op, avro.ErrRegistryUnavailable)
	}
	return nil
}

func (f *fakeRegistry) Register(_ context.Context, subject, schema string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("register"); err != nil {
		return 0, err
	}
	for _, id := range f.subjects[subject] {
		if f.texts[id] == schema {
			return id, nil
		}
	}
	id := 0
	for existing, text := range f.texts {
		if text == schema {
			id = existing
		}
	}
	if id == 0 {
		id = len(f.texts) + 1
		f.texts[id] = schema
	}
	f.subjects[subject] = append(f.subjects[subject], id)
	return id, nil
}

func (f *fakeRegistry) Lookup(_ context.Context, subject, schema string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("lookup"); err != nil {
		return 0, err
	}
	for _, id := range f.subjects[subject] {
		if f.texts[id] == schema {
			return id, nil
		}
	}
	return 0, fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
}

func (f *fakeRegistry) SchemaByID(_ context.Context, id int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("byid"); err != nil {
		return "", err
	}
	t, ok := f.texts[id]
	if !ok {
		return "", fmt.Errorf("id %d: %w", id, avro.ErrUnknownSchema)
	}
	return t, nil
}

func (f *fakeRegistry) Latest(_ context.Context, subject string) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("latest"); err != nil {
		return 0, "", err
	}
	ids := f.subjects[subject]
	if len(ids) == 0 {
		return 0, "", fmt.Errorf("subject %s: %w", subject, avro.ErrUnknownSchema)
	}
	return ids[len(ids)-1], f.texts[ids[len(ids)-1]], nil
}
