package avro

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	havro "github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// Registry is what a Serde needs from a schema registry. *RegistryClient
// implements it for any Confluent-compatible registry; tests may pass a fake.
type Registry interface {
	// Register registers schema under subject and returns its id. Registering
	// a schema the subject already has returns the existing id.
	Register(ctx context.Context, subject, schema string) (int, error)
	// Lookup returns the id of schema under subject, or an error wrapping
	// ErrUnknownSchema when the subject does not have it.
	Lookup(ctx context.Context, subject, schema string) (int, error)
	// SchemaByID returns the text of the schema with the id, or an error
	// wrapping ErrUnknownSchema.
	SchemaByID(ctx context.Context, id int) (string, error)
	// Latest returns the id and text of the latest schema under subject, or
	// an error wrapping ErrUnknownSchema.
	Latest(ctx context.Context, subject string) (id int, schema string, err error)
}

// Subject is the registry subject of the record fullName on topic: the
// TopicRecordNameStrategy, <topic>-<full name>, because one troupe topic
// carries several event types.
func Subject(topic, fullName string) string { return topic + "-" + fullName }

// RegistryClient talks to a Confluent-compatible schema registry (Confluent,
// Karapace, Redpanda, Apicurio's ccompat API, troupe's built-in registry)
// through franz-go's sr client. Schemas by id are cached: they never change.
// It is safe for concurrent use.
type RegistryClient struct {
	url string
	cl  *sr.Client

	mu   sync.RWMutex
	byID map[int]string
}

// NewRegistryClient returns a client for the registry at url. opts are
// passed to sr.NewClient after the URL (authentication, TLS, HTTP client).
// It does not contact the registry.
func NewRegistryClient(url string, opts ...sr.ClientOpt) (*RegistryClient, error) {
	if url == "" {
		return nil, errors.New("no schema registry URL (set --registry or TROUPE_REGISTRY_URL, e.g. http://127.0.0.1:8081)")
	}
	cl, err := sr.NewClient(append([]sr.ClientOpt{sr.URLs(url)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("schema registry client for %s: %w", url, err)
	}
	return &RegistryClient{url: url, cl: cl, byID: make(map[int]string)}, nil
}

// URL is the registry's address.
func (c *RegistryClient) URL() string { return c.url }

// SR is the underlying franz-go client, for the parts of the REST API this
// type does not wrap.
func (c *RegistryClient) SR() *sr.Client { return c.cl }

// Register registers the Avro schema under subject and returns its id. The
// registry refuses a schema incompatible with the subject's earlier versions
// under its compatibility level; the error carries the registry's message.
func (c *RegistryClient) Register(ctx context.Context, subject, schema string) (int, error) {
	id, err := c.cl.RegisterSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro}, -1, -1)
	if err != nil {
		return 0, c.wrap(ctx, "register schema under subject "+subject, err)
	}
	c.remember(id, schema)
	return id, nil
}

// Lookup returns the id of schema under subject.
func (c *RegistryClient) Lookup(ctx context.Context, subject, schema string) (int, error) {
	ss, err := c.cl.LookupSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		return 0, c.wrap(ctx, "look up schema under subject "+subject, err)
	}
	return ss.ID, nil
}

// SchemaByID returns the text of the schema with the id, from the cache when
// it was seen before. A schema with references (named types that other
// subjects' versions define) comes back whole: the types it references are
// inlined, so that the text alone decodes what was written with it.
func (c *RegistryClient) SchemaByID(ctx context.Context, id int) (string, error) {
	c.mu.RLock()
	s, ok := c.byID[id]
	c.mu.RUnlock()
	if ok {
		return s, nil
	}
	sch, err := c.cl.SchemaByID(ctx, id)
	if err != nil {
		return "", c.wrap(ctx, fmt.Sprintf("get schema id %d", id), err)
	}
	if sch.Type != sr.TypeAvro {
		return "", fmt.Errorf("schema id %d is %s, not Avro: %w", id, sch.Type, ErrUnknownSchema)
	}
	text := sch.Schema
	if len(sch.References) > 0 {
		if text, err = c.inline(ctx, sch); err != nil {
			return "", fmt.Errorf("schema id %d: %w", id, err)
		}
	}
	c.remember(id, text)
	return text, nil
}

// maxReferenceDepth bounds how deeply references may refer to further ones.
const maxReferenceDepth = 32

// inline parses s after the versions it references (each after those it
// references in turn, each once) into one cache, and returns s's full form,
// with the referenced types defined in it.
func (c *RegistryClient) inline(ctx context.Context, s sr.Schema) (string, error) {
	cache := &havro.SchemaCache{}
	seen := map[sr.SchemaReference]bool{}
	// A referenced version may be soft-deleted: data written with it stays.
	ctx = sr.WithParams(ctx, sr.ShowDeleted)
	var load func(refs []sr.SchemaReference, depth int) error
	load = func(refs []sr.SchemaReference, depth int) error {
		if depth > maxReferenceDepth {
			return fmt.Errorf("its references nest more than %d deep", maxReferenceDepth)
		}
		for _, r := range refs {
			if seen[r] {
				continue
			}
			seen[r] = true
			ss, err := c.cl.SchemaByVersion(ctx, r.Subject, r.Version)
			if err != nil {
				return c.wrap(ctx, fmt.Sprintf("get version %d of subject %s, which it references", r.Version, r.Subject), err)
			}
			if err := load(ss.References, depth+1); err != nil {
				return err
			}
			if _, err := parseInto(ss.Schema.Schema, cache); err != nil {
				return fmt.Errorf("version %d of subject %s, which it references: %w", r.Version, r.Subject, err)
			}
		}
		return nil
	}
	if err := load(s.References, 0); err != nil {
		return "", err
	}
	full, err := parseInto(s.Schema, cache)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(full)
	if err != nil {
		return "", fmt.Errorf("render it with its references inlined: %w", err)
	}
	return string(b), nil
}

// parseInto parses text into cache, where the types of the schemas parsed
// before are known, turning a panic of the parser into an error as
// ParseSchema does.
func parseInto(text string, cache *havro.SchemaCache) (sch havro.Schema, err error) {
	defer func() {
		if p := recover(); p != nil {
			sch, err = nil, fmt.Errorf("avro: the schema parser failed on it (%v); check its unions, defaults and names", p)
		}
	}()
	return havro.ParseWithCache(text, "", cache)
}

// Latest returns the id and text of the latest version under subject.
func (c *RegistryClient) Latest(ctx context.Context, subject string) (int, string, error) {
	ss, err := c.cl.SchemaByVersion(ctx, subject, -1)
	if err != nil {
		return 0, "", c.wrap(ctx, "get latest schema of subject "+subject, err)
	}
	c.remember(ss.ID, ss.Schema.Schema)
	return ss.ID, ss.Schema.Schema, nil
}

// Compatibility is the registry's verdict on a candidate schema.
type Compatibility struct {
	// Compatible is true when the subject may take the schema as its next
	// version (or the subject does not exist yet).
	Compatible bool
	// NewSubject is true when the subject has no versions yet.
	NewSubject bool
	// Messages explain an incompatibility; the built-in registry names the
	// field.
	Messages []string
}

// Check asks whether schema may become the next version of subject under
// the subject's compatibility level (against the latest version, or every
// version for a _TRANSITIVE level, as registering would), without
// registering it.
func (c *RegistryClient) Check(ctx context.Context, subject, schema string) (Compatibility, error) {
	res, err := c.cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subject, -2, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && (re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrVersionNotFound.Code) {
			return Compatibility{Compatible: true, NewSubject: true}, nil
		}
		return Compatibility{}, c.wrap(ctx, "check compatibility with subject "+subject, err)
	}
	return Compatibility{Compatible: res.Is, Messages: res.Messages}, nil
}

// Subjects lists the registry's subjects.
func (c *RegistryClient) Subjects(ctx context.Context) ([]string, error) {
	s, err := c.cl.Subjects(ctx)
	if err != nil {
		return nil, c.wrap(ctx, "list subjects", err)
	}
	return s, nil
}

// Version is one version of a subject.
type Version struct {
	Subject string
	Version int
	ID      int
	Schema  string
}

// LatestVersion returns the latest version of subject.
func (c *RegistryClient) LatestVersion(ctx context.Context, subject string) (Version, error) {
	ss, err := c.cl.SchemaByVersion(ctx, subject, -1)
	if err != nil {
		return Version{}, c.wrap(ctx, "get latest version of subject "+subject, err)
	}
	return Version{Subject: ss.Subject, Version: ss.Version, ID: ss.ID, Schema: ss.Schema.Schema}, nil
}

// LookupVersion returns the version of subject that has schema.
func (c *RegistryClient) LookupVersion(ctx context.Context, subject, schema string) (Version, error) {
	ss, err := c.cl.LookupSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		return Version{}, c.wrap(ctx, "look up schema under subject "+subject, err)
	}
	return Version{Subject: subject, Version: ss.Version, ID: ss.ID, Schema: ss.Schema.Schema}, nil
}

// State is where a schema stands in a subject.
type State int

// The states of a schema in a subject.
const (
	// StateNew: the subject has no versions; the schema would be version 1.
	StateNew State = iota
	// StateUnchanged: the subject already has the schema.
	StateUnchanged
	// StateCompatible: the schema would be the subject's next version.
	StateCompatible
	// StateIncompatible: the registry would refuse the schema.
	StateIncompatible
)

func (s State) String() string {
	return [...]string{"new", "unchanged", "compatible", "incompatible"}[s]
}

// Status is where one schema stands in one subject.
type Status struct {
	Subject string
	State   State
	// Version and ID: of the schema when StateUnchanged, else of the subject's
	// latest version (0 when New).
	Version int
	ID      int
	// Messages say why, when StateIncompatible.
	Messages []string
}

// Status finds where schema stands in subject, without changing anything:
// what `troupe schemas check` reports.
func (c *RegistryClient) Status(ctx context.Context, subject, schema string) (Status, error) {
	st := Status{Subject: subject}
	v, err := c.LookupVersion(ctx, subject, schema)
	if err == nil {
		st.State, st.Version, st.ID = StateUnchanged, v.Version, v.ID
		return st, nil
	}
	if !errors.Is(err, ErrUnknownSchema) {
		return st, err
	}
	latest, err := c.LatestVersion(ctx, subject)
	switch {
	case errors.Is(err, ErrUnknownSchema):
		st.State = StateNew
		return st, nil
	case err != nil:
		return st, err
	}
	st.Version, st.ID = latest.Version, latest.ID
	res, err := c.Check(ctx, subject, schema)
	if err != nil {
		return st, err
	}
	st.State, st.Messages = StateCompatible, res.Messages
	if !res.Compatible {
		st.State = StateIncompatible
	}
	return st, nil
}

func (c *RegistryClient) remember(id int, schema string) {
	c.mu.Lock()
	c.byID[id] = schema
	c.mu.Unlock()
}

// wrap turns sr errors into errors that say what to do: not-found codes
// wrap ErrUnknownSchema, 401 and 403 ErrRegistryAuth, transport failures and 5xx wrap
// ErrRegistryUnavailable and name the URL and the setting.
func (c *RegistryClient) wrap(ctx context.Context, op string, err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrVersionNotFound.Code ||
			re.ErrorCode == sr.ErrSchemaNotFound.Code || re.StatusCode == 404 && re.ErrorCode == 0:
			return fmt.Errorf("%s: %w (registry %s: %s)", op, ErrUnknownSchema, c.url, re.Error())
		case re.StatusCode == 401:
			return fmt.Errorf("%s: %w: %s answered 401 Unauthorized (send its token: set --auth-token-file or TROUPE_AUTH_TOKEN; for another registry, user:password in --registry's URL)",
				op, ErrRegistryAuth, c.url)
		case re.StatusCode == 403:
			return fmt.Errorf("%s: %w: %s answered 403 %s (the token may not do this: set --auth-token-file or TROUPE_AUTH_TOKEN to the write token)",
				op, ErrRegistryAuth, c.url, re.Message)
		case re.StatusCode >= 500:
			return fmt.Errorf("%s: %w: %s answered %d: %w", op, ErrRegistryUnavailable, c.url, re.StatusCode, re)
		}
		return fmt.Errorf("%s: registry %s: %w", op, c.url, re)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	return fmt.Errorf("%s: %w: cannot reach %s (is it running? set --registry or TROUPE_REGISTRY_URL): %w",
		op, ErrRegistryUnavailable, c.url, err)
}
