package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

// contentType is the Schema Registry's media type; clients also accept
// application/json.
const contentType = "application/vnd.schemaregistry.v1+json"

// apiError is an error in the Confluent format:
// {"error_code":40401,"message":"..."}.
type apiError struct {
	status  int
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (error code %d)", e.Message, e.Code) }

// The Confluent error codes the API uses.
func errSubjectNotFound(s string) error {
	return &apiError{http.StatusNotFound, 40401, fmt.Sprintf("Subject '%s' not found.", quote(s))}
}

func errVersionNotFound(s string, v string) error {
	return &apiError{http.StatusNotFound, 40402, fmt.Sprintf("Version %s not found for subject '%s'.", quote(v), quote(s))}
}

func errSchemaNotFound(what string) error {
	return &apiError{http.StatusNotFound, 40403, "Schema not found: " + what}
}

func errSubjectSoftDeleted(s string) error {
	return &apiError{http.StatusNotFound, 40404, fmt.Sprintf("Subject '%s' was soft deleted. Set permanent=true to delete permanently", quote(s))}
}

func errSubjectNotSoftDeleted(s string) error {
	return &apiError{http.StatusNotFound, 40405, fmt.Sprintf("Subject '%s' was not deleted first before being permanently deleted (delete it without permanent=true first)", quote(s))}
}

func errVersionSoftDeleted(s string, v int) error {
	return &apiError{http.StatusNotFound, 40406, fmt.Sprintf("Subject '%s' Version %d was soft deleted. Set permanent=true to delete permanently", quote(s), v)}
}

func errVersionNotSoftDeleted(s string, v int) error {
	return &apiError{http.StatusNotFound, 40407, fmt.Sprintf("Subject '%s' Version %d was not deleted first before being permanently deleted (delete it without permanent=true first)", quote(s), v)}
}

func errInvalidSchema(msg string) error {
	return &apiError{http.StatusUnprocessableEntity, 42201, "Invalid schema: " + msg}
}

func errInvalidVersion(v string) error {
	return &apiError{http.StatusUnprocessableEntity, 42202,
		fmt.Sprintf("The specified version '%s' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"", quote(v))}
}

func errInvalidLevel(msg string) error {
	return &apiError{http.StatusUnprocessableEntity, 42203, "Invalid compatibility level: " + msg}
}

func errNotPermitted(msg string) error {
	return &apiError{http.StatusUnprocessableEntity, 42205, "Operation not permitted: " + msg}
}

func errReferenceExists(s string, v int, ids []int) error {
	return &apiError{http.StatusUnprocessableEntity, 42206,
		fmt.Sprintf("One or more references exist to the schema {subject=%s,version=%d}: schema ids %v refer to it; delete the versions that use them first (GET /subjects/%s/versions/%d/referencedby)", quote(s), v, ids, quote(s), v)}
}

func errBadRequest(msg string) error {
	return &apiError{http.StatusBadRequest, 400, msg}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h func(*http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			defer s.recovered(w, r)
			if err := s.waitReady(r.Context()); err != nil {
				writeError(w, err)
				return
			}
			v, err := h(r)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		})
	}
	handle("GET /{$}", func(*http.Request) (any, error) { return struct{}{}, nil })
	handle("GET /subjects", s.getSubjects)
	handle("GET /subjects/{subject}/versions", s.getVersions)
	handle("POST /subjects/{subject}/versions", s.postVersion)
	handle("GET /subjects/{subject}/versions/{version}", s.getVersion)
	handle("GET /subjects/{subject}/versions/{version}/schema", s.getVersionSchema)
	handle("GET /subjects/{subject}/versions/{version}/referencedby", s.getReferencedBy)
	handle("GET /subjects/{subject}/metadata", s.getByMetadata)
	handle("POST /subjects/{subject}", s.lookup)
	handle("DELETE /subjects/{subject}", s.deleteSubject)
	handle("DELETE /subjects/{subject}/versions/{version}", s.deleteVersion)
	handle("GET /schemas", s.getSchemas)
	handle("GET /schemas/types", func(*http.Request) (any, error) { return []string{"AVRO"}, nil })
	handle("GET /schemas/ids/{id}", s.getSchemaByID)
	handle("GET /schemas/ids/{id}/schema", s.getRawSchemaByID)
	handle("GET /schemas/ids/{id}/versions", s.getIDVersions)
	handle("GET /schemas/ids/{id}/subjects", s.getIDSubjects)
	handle("POST /compatibility/subjects/{subject}/versions/{version}", s.checkCompatibility)
	handle("POST /compatibility/subjects/{subject}/versions", s.checkCompatibility)
	handle("GET /config", s.getConfig)
	handle("PUT /config", s.putConfig)
	handle("DELETE /config", s.deleteConfig)
	handle("GET /config/{subject}", s.getConfig)
	handle("PUT /config/{subject}", s.putConfig)
	handle("DELETE /config/{subject}", s.deleteConfig)
	handle("GET /mode", s.getMode)
	handle("PUT /mode", s.putMode)
	handle("DELETE /mode", s.deleteMode)
	handle("GET /mode/{subject}", s.getMode)
	handle("PUT /mode/{subject}", s.putMode)
	handle("DELETE /mode/{subject}", s.deleteMode)
	handle("GET /contexts", getContexts)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{http.StatusNotFound, 404, fmt.Sprintf("HTTP 404 Not Found: no endpoint %s %s in troupe's built-in registry", quote(r.Method), quote(r.URL.Path))})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error_code":50001,"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		code := 50001
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			code = 50002
		}
		ae = &apiError{http.StatusInternalServerError, code, err.Error()}
	}
	if len(ae.Message) > maxMessage {
		cp := *ae
		cp.Message = capMessage(ae.Message)
		ae = &cp
	}
	writeJSON(w, ae.status, ae)
}

func flag(r *http.Request, name string) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get(name))
	return v
}

// page applies the offset and limit parameters (a negative limit is no
// limit) to a list.
func page[T any](r *http.Request, xs []T) ([]T, error) {
	q := r.URL.Query()
	offset, limit := 0, -1
	for name, dst := range map[string]*int{"offset": &offset, "limit": &limit} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, errBadRequest(fmt.Sprintf("%s=%q is not a number", name, quote(v)))
			}
			*dst = n
		}
	}
	offset = min(max(offset, 0), len(xs))
	xs = xs[offset:]
	if limit >= 0 && limit < len(xs) {
		xs = xs[:limit]
	}
	return xs, nil
}

// schemaRequest is the body of register, lookup and compatibility requests.
type schemaRequest struct {
	Schema     string          `json:"schema"`
	SchemaType string          `json:"schemaType"`
	References []Reference     `json:"references"`
	Metadata   json.RawMessage `json:"metadata"`
	RuleSet    json.RawMessage `json:"ruleSet"`
	ID         int             `json:"id"`
	Version    int             `json:"version"`

	text string // Schema, compact
}

// readSchema reads a request body with a schema, compacts its text (the
// registry's identity of a schema, with its references, metadata and
// rules) and checks its references' form, refusing bodies and schemas over
// the limits.
func (s *Server) readSchema(r *http.Request) (schemaRequest, error) {
	var req schemaRequest
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, s.bodyLimit()))
	if tooLarge(err) {
		return req, errTooLarge(s.bodyLimit(), "twice registry.Config.MaxSchemaBytes, plus 64 KiB")
	}
	if err != nil {
		return req, errBadRequest("read request body: " + err.Error())
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, errBadRequest("request body is not a JSON object with a \"schema\" string: " + err.Error())
	}
	if t := strings.ToUpper(req.SchemaType); t != "" && t != "AVRO" {
		return req, errInvalidSchema(fmt.Sprintf("schema type %s is not supported by troupe's built-in registry (Avro only; JSON Schema and Protobuf need another registry, e.g. Confluent's)", quote(req.SchemaType)))
	}
	if strings.TrimSpace(req.Schema) == "" {
		return req, errInvalidSchema("empty schema")
	}
	if len(req.References) > maxResolved {
		return req, errInvalidSchema(fmt.Sprintf("%d references, over the built-in registry's limit of %d", len(req.References), maxResolved))
	}
	for _, ref := range req.References {
		if ref.Name == "" || validSubject(ref.Subject) != nil || (ref.Version < 1 && ref.Version != -1) {
			return req, errInvalidSchema(fmt.Sprintf("reference %+v needs a name (the full name of the type it defines), a subject and a version (1 or more, or -1 for the latest)", ref))
		}
	}
	for _, f := range []*json.RawMessage{&req.Metadata, &req.RuleSet} {
		if *f, err = normalJSON(*f); err != nil {
			return req, errInvalidSchema(err.Error())
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(req.Schema)); err != nil {
		// Avro allows a bare type name, like string, as a schema.
		compact.Reset()
		compact.WriteString(strings.TrimSpace(req.Schema))
	}
	if err := s.checkLimits(compact.String()); err != nil {
		return req, err
	}
	req.text = compact.String()
	return req, nil
}

// normalJSON returns the metadata or rule set of a request in one form
// (keys sorted, empty members left out), nil when there is none.
func normalJSON(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("metadata and ruleSet must be JSON objects, not %s", quote(string(raw)))
	}
	for k, x := range m {
		switch x := x.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			if len(x) == 0 {
				delete(m, k)
			}
		case []any:
			if len(x) == 0 {
				delete(m, k)
			}
		}
	}
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

// candidate parses req's schema after the schemas it references, into a
// schema without an id yet. The caller holds s.mu.
func (s *Server) candidate(req schemaRequest) (*stored, error) {
	refs := make([]Reference, len(req.References))
	for i, ref := range req.References {
		if ref.Version == -1 {
			sub := s.st.subjects[ref.Subject]
			var live []*version
			if sub != nil {
				live = sub.live()
			}
			if len(live) == 0 {
				return nil, errInvalidSchema(fmt.Sprintf("reference %q: subject %q has no version", quote(ref.Name), quote(ref.Subject)))
			}
			ref.Version = live[len(live)-1].version
		}
		refs[i] = ref
	}
	if len(refs) == 0 {
		refs = nil
	}
	sch, deps, err := s.st.parse(req.text, refs)
	if err != nil {
		return nil, errInvalidSchema(quote(err.Error()))
	}
	if len(refs) > 0 {
		// Checking compatibility costs what the resolved schema's size and
		// nesting cost, however it is split.
		full, _ := json.Marshal(sch)
		if err := s.checkLimits(string(full)); err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				return nil, &apiError{ae.status, ae.Code, ae.Message + ", counting the types it references"}
			}
			return nil, err
		}
	}
	return &stored{text: req.text, schema: sch, refs: refs, deps: deps, metadata: req.Metadata, ruleSet: req.RuleSet,
		ident: identity(sch, refs, req.Metadata, req.RuleSet)}, nil
}

func validSubject(s string) error {
	if s == "" || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return errBadRequest(fmt.Sprintf("invalid subject name %q", quote(s)))
	}
	if len(s) > MaxSubjectBytes {
		return errBadRequest(fmt.Sprintf("subject name of %d bytes, over the limit of %d (registry.MaxSubjectBytes): %q", len(s), MaxSubjectBytes, quote(s)))
	}
	return nil
}

// ---- subjects ----

func (s *Server) getSubjects(r *http.Request) (any, error) {
	deleted, deletedOnly := flag(r, "deleted"), flag(r, "deletedOnly")
	prefix := r.URL.Query().Get("subjectPrefix")
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []string{}
	for _, name := range s.st.subjectNames(deleted || deletedOnly) {
		live := len(s.st.subjects[name].live()) > 0
		if strings.HasPrefix(name, prefix) && (!deletedOnly || !live) {
			out = append(out, name)
		}
	}
	return page(r, out)
}

// subjectOrCatchUp returns the subject, waiting once for this instance to
// catch up with the topic if it does not know it: another instance may have
// just written it.
func (s *Server) subjectOrCatchUp(ctx context.Context, name string, deleted bool) error {
	known := func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		sub := s.st.subjects[name]
		return sub != nil && len(sub.versions) > 0 && (deleted || len(sub.live()) > 0)
	}
	if known() {
		return nil
	}
	if err := s.catchUp(ctx); err != nil {
		return err
	}
	if known() {
		return nil
	}
	return errSubjectNotFound(name)
}

func (s *Server) getVersions(r *http.Request) (any, error) {
	name, deleted, deletedOnly := r.PathValue("subject"), flag(r, "deleted"), flag(r, "deletedOnly")
	if err := s.subjectOrCatchUp(r.Context(), name, deleted || deletedOnly); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []int{}
	for _, v := range s.st.subjects[name].versions {
		if (deleted && !deletedOnly) || v.deleted == deletedOnly {
			out = append(out, v.version)
		}
	}
	return page(r, out)
}

// subjectVersion is a version as the API shows it.
type subjectVersion struct {
	Subject    string          `json:"subject"`
	Version    int             `json:"version"`
	ID         int             `json:"id"`
	Schema     string          `json:"schema"`
	References []Reference     `json:"references,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	RuleSet    json.RawMessage `json:"ruleSet,omitempty"`
}

// show renders version v of subject name. The caller holds s.mu.
func (s *Server) show(name string, v *version) subjectVersion {
	st := s.st.byID[v.id]
	return subjectVersion{Subject: name, Version: v.version, ID: v.id, Schema: st.text,
		References: st.refs, Metadata: st.metadata, RuleSet: st.ruleSet}
}

// findVersion resolves a version path element ("latest", "-1" or a number)
// of subject name. The caller holds s.mu.
func (s *Server) findVersion(name, ver string, deleted bool) (*version, error) {
	sub := s.st.subjects[name]
	if sub == nil || len(sub.versions) == 0 || (!deleted && len(sub.live()) == 0) {
		return nil, errSubjectNotFound(name)
	}
	if ver == "latest" || ver == "-1" {
		for i := len(sub.versions) - 1; i >= 0; i-- {
			if v := sub.versions[i]; deleted || !v.deleted {
				return v, nil
			}
		}
		return nil, errVersionNotFound(name, ver)
	}
	n, err := strconv.Atoi(ver)
	if err != nil || n < 1 {
		return nil, errInvalidVersion(ver)
	}
	if v := sub.find(n); v != nil && (deleted || !v.deleted) {
		return v, nil
	}
	return nil, errVersionNotFound(name, ver)
}

func (s *Server) versionFromRequest(r *http.Request) (subjectVersion, error) {
	name, deleted := r.PathValue("subject"), flag(r, "deleted")
	if err := s.subjectOrCatchUp(r.Context(), name, deleted); err != nil {
		return subjectVersion{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, err := s.findVersion(name, r.PathValue("version"), deleted)
	if err != nil {
		return subjectVersion{}, err
	}
	return s.show(name, v), nil
}

func (s *Server) getVersion(r *http.Request) (any, error) { return s.versionFromRequest(r) }

func (s *Server) getVersionSchema(r *http.Request) (any, error) {
	sv, err := s.versionFromRequest(r)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(sv.Schema), nil
}

// getReferencedBy lists the ids of the schemas that refer to a version.
func (s *Server) getReferencedBy(r *http.Request) (any, error) {
	sv, err := s.versionFromRequest(r)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.referrers(sv.Subject, sv.Version, flag(r, "deleted")), nil
}

// getByMetadata returns the latest version whose metadata has every
// property given as key=K&value=V pairs.
func (s *Server) getByMetadata(r *http.Request) (any, error) {
	name, deleted := r.PathValue("subject"), flag(r, "deleted")
	q := r.URL.Query()
	keys, values := q["key"], q["value"]
	if len(keys) != len(values) {
		return nil, errBadRequest(fmt.Sprintf("%d key and %d value parameters; give them in pairs", len(keys), len(values)))
	}
	if err := s.subjectOrCatchUp(r.Context(), name, deleted); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	sub := s.st.subjects[name]
	for i := len(sub.versions) - 1; i >= 0; i-- {
		v := sub.versions[i]
		if v.deleted && !deleted {
			continue
		}
		var md struct {
			Properties map[string]string `json:"properties"`
		}
		_ = json.Unmarshal(s.st.byID[v.id].metadata, &md)
		match := true
		for j, k := range keys {
			if got, ok := md.Properties[k]; !ok || got != values[j] {
				match = false
				break
			}
		}
		if match {
			return s.show(name, v), nil
		}
	}
	return nil, errSchemaNotFound(fmt.Sprintf("subject '%s' has no version with that metadata", quote(name)))
}

func (s *Server) postVersion(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	if err := validSubject(name); err != nil {
		return nil, err
	}
	req, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	// An invalid schema is refused before anything waits for Kafka.
	s.mu.RLock()
	_, err = s.candidate(req)
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	id, err := s.register(r.Context(), name, req)
	if err != nil {
		return nil, err
	}
	return map[string]int{"id": id}, nil
}

func (s *Server) lookup(r *http.Request) (any, error) {
	name, deleted := r.PathValue("subject"), flag(r, "deleted")
	req, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	if err := s.subjectOrCatchUp(r.Context(), name, deleted); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, err := s.candidate(req)
	if err != nil {
		return nil, err
	}
	v := s.st.versionOf(name, c.ident, deleted)
	if v == nil {
		return nil, errSchemaNotFound(fmt.Sprintf("subject '%s' has no such schema", quote(name)))
	}
	return s.show(name, v), nil
}

// writable refuses a write to subject name (all subjects: "") in a
// read-only mode. The caller holds s.mu.
func (s *Server) writable(name string) error {
	if m := s.st.modeOf(name); m == ReadOnly || m == ReadOnlyOverride {
		return errNotPermitted(fmt.Sprintf("Subject %s is in %s mode (GET /mode/%s?defaultToGlobal=true; PUT /mode or /mode/%s {\"mode\":\"READWRITE\"} allows writes again)", quote(name), m, quote(name), quote(name)))
	}
	return nil
}

// deleteSubject soft-deletes a subject's live versions, or, with
// permanent=true, removes its soft-deleted versions for good, as
// Confluent's registry does: a permanent delete needs a soft delete first.
func (s *Server) deleteSubject(r *http.Request) (any, error) {
	name, permanent := r.PathValue("subject"), flag(r, "permanent")
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.subjectOrCatchUp(r.Context(), name, true); err != nil {
		return nil, err
	}
	s.mu.RLock()
	sub := s.st.subjects[name]
	live := sub.live()
	err := s.writable(name)
	switch {
	case err != nil:
	case !permanent && len(live) == 0:
		err = errSubjectSoftDeleted(name)
	case permanent && len(live) > 0:
		err = errSubjectNotSoftDeleted(name)
	}
	var versions []int
	for _, v := range sub.versions {
		if permanent || !v.deleted {
			versions = append(versions, v.version)
		}
	}
	for _, n := range versions {
		if err != nil {
			break
		}
		// References from this subject's own versions go with them.
		var others []int
		for _, id := range s.st.referrers(name, n, permanent) {
			for _, u := range s.st.usages(id, permanent) {
				if u.Subject != name {
					others = append(others, id)
					break
				}
			}
		}
		if len(others) > 0 {
			err = errReferenceExists(name, n, others)
		}
	}
	upTo := sub.lastVersion()
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if permanent {
		err = s.write(r.Context(), recordKey{Kind: kindPurge, Subject: name, Proposal: newProposal()}, purgeValue{Versions: versions})
	} else {
		err = s.write(r.Context(), recordKey{Kind: kindDeleteSubject, Subject: name}, deleteSubjectValue{UpTo: upTo})
	}
	if err != nil {
		return nil, err
	}
	return versions, nil
}

// deleteVersion soft-deletes a version, or, with permanent=true, removes a
// soft-deleted one for good.
func (s *Server) deleteVersion(r *http.Request) (any, error) {
	name, ver, permanent := r.PathValue("subject"), r.PathValue("version"), flag(r, "permanent")
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.subjectOrCatchUp(r.Context(), name, true); err != nil {
		return nil, err
	}
	s.mu.RLock()
	v, err := s.findVersion(name, ver, true)
	if err == nil && (ver == "latest" || ver == "-1") && !permanent {
		v, err = s.findVersion(name, ver, false)
	}
	switch {
	case err != nil:
	case !permanent && v.deleted:
		err = errVersionSoftDeleted(name, v.version)
	default:
		if err = s.writable(name); err != nil {
			break
		}
		if ids := s.st.referrers(name, v.version, permanent); len(ids) > 0 {
			err = errReferenceExists(name, v.version, ids)
		} else if permanent && !v.deleted {
			err = errVersionNotSoftDeleted(name, v.version)
		}
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if permanent {
		err = s.write(r.Context(), recordKey{Kind: kindPurge, Subject: name, Proposal: newProposal()}, purgeValue{Versions: []int{v.version}})
	} else {
		err = s.write(r.Context(), recordKey{Kind: kindDeleteVersion, Subject: name, Version: v.version}, struct{}{})
	}
	if err != nil {
		return nil, err
	}
	return v.version, nil
}

// ---- schemas ----

// getSchemas lists versions of every subject (subjectPrefix, deleted,
// latestOnly, offset and limit as Confluent's GET /schemas).
func (s *Server) getSchemas(r *http.Request) (any, error) {
	prefix, deleted, latestOnly := r.URL.Query().Get("subjectPrefix"), flag(r, "deleted"), flag(r, "latestOnly")
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []subjectVersion{}
	for _, name := range s.st.subjectNames(deleted) {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		var vs []subjectVersion
		for _, v := range s.st.subjects[name].versions {
			if deleted || !v.deleted {
				vs = append(vs, s.show(name, v))
			}
		}
		if latestOnly && len(vs) > 0 {
			vs = vs[len(vs)-1:]
		}
		out = append(out, vs...)
	}
	return page(r, out)
}

func (s *Server) schemaByID(r *http.Request) (*stored, error) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		return nil, errSchemaNotFound(fmt.Sprintf("id %q is not a number", quote(r.PathValue("id"))))
	}
	get := func() *stored {
		s.mu.RLock()
		defer s.mu.RUnlock()
		// An id all of whose versions were deleted permanently is gone.
		if st := s.st.byID[id]; st != nil && len(s.st.usages(id, true)) > 0 {
			return st
		}
		return nil
	}
	st := get()
	if st == nil {
		if err := s.catchUp(r.Context()); err != nil {
			return nil, err
		}
		if st = get(); st == nil {
			return nil, errSchemaNotFound(fmt.Sprintf("no schema with id %d", id))
		}
	}
	return st, nil
}

type schemaByIDResponse struct {
	Schema     string          `json:"schema"`
	References []Reference     `json:"references,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	RuleSet    json.RawMessage `json:"ruleSet,omitempty"`
	MaxID      int             `json:"maxId,omitempty"`
}

func (s *Server) getSchemaByID(r *http.Request) (any, error) {
	st, err := s.schemaByID(r)
	if err != nil {
		return nil, err
	}
	out := schemaByIDResponse{Schema: st.text, References: st.refs, Metadata: st.metadata, RuleSet: st.ruleSet}
	if flag(r, "fetchMaxId") {
		s.mu.RLock()
		out.MaxID = s.st.maxID
		s.mu.RUnlock()
	}
	return out, nil
}

func (s *Server) getRawSchemaByID(r *http.Request) (any, error) {
	st, err := s.schemaByID(r)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(st.text), nil
}

type subjectAndVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// usages lists the versions that use an id, filtered by the subject
// parameter when given.
func (s *Server) usages(r *http.Request) ([]subjectAndVersion, error) {
	st, err := s.schemaByID(r)
	if err != nil {
		return nil, err
	}
	subject := r.URL.Query().Get("subject")
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []subjectAndVersion{}
	for _, u := range s.st.usages(st.id, flag(r, "deleted")) {
		if subject == "" || u.Subject == subject {
			out = append(out, u)
		}
	}
	return out, nil
}

func (s *Server) getIDVersions(r *http.Request) (any, error) {
	us, err := s.usages(r)
	if err != nil {
		return nil, err
	}
	return page(r, us)
}

func (s *Server) getIDSubjects(r *http.Request) (any, error) {
	us, err := s.usages(r)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, u := range us {
		if len(out) == 0 || out[len(out)-1] != u.Subject {
			out = append(out, u.Subject)
		}
	}
	return page(r, out)
}

// getContexts lists the schema contexts: troupe's registry has only
// Confluent's default one, ".".
func getContexts(r *http.Request) (any, error) {
	out := []string{}
	if p := r.URL.Query().Get("contextPrefix"); strings.HasPrefix(".", p) {
		out = append(out, ".")
	}
	return page(r, out)
}
