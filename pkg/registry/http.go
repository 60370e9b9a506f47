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
	handle("POST /subjects/{subject}", s.lookup)
	handle("DELETE /subjects/{subject}", s.deleteSubject)
	handle("DELETE /subjects/{subject}/versions/{version}", s.deleteVersion)
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
	handle("GET /mode", getMode)
	handle("GET /mode/{subject}", getMode)
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

// schemaRequest is the body of register, lookup and compatibility requests.
type schemaRequest struct {
	Schema     string            `json:"schema"`
	SchemaType string            `json:"schemaType"`
	References []json.RawMessage `json:"references"`
	ID         int               `json:"id"`
	Version    int               `json:"version"`
}

// readSchema reads a request body with a schema and returns its compact
// text (the registry's identity of a schema), refusing bodies and schemas
// over the limits.
func (s *Server) readSchema(r *http.Request) (schemaRequest, string, error) {
	var req schemaRequest
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, s.bodyLimit()))
	if tooLarge(err) {
		return req, "", errTooLarge(s.bodyLimit(), "twice registry.Config.MaxSchemaBytes, plus 64 KiB")
	}
	if err != nil {
		return req, "", errBadRequest("read request body: " + err.Error())
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, "", errBadRequest("request body is not a JSON object with a \"schema\" string: " + err.Error())
	}
	if t := strings.ToUpper(req.SchemaType); t != "" && t != "AVRO" {
		return req, "", errInvalidSchema(fmt.Sprintf("schema type %s is not supported by troupe's built-in registry (Avro only)", quote(req.SchemaType)))
	}
	if len(req.References) > 0 {
		return req, "", errInvalidSchema("schema references are not supported by troupe's built-in registry: define named types inline")
	}
	if strings.TrimSpace(req.Schema) == "" {
		return req, "", errInvalidSchema("empty schema")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(req.Schema)); err != nil {
		// Avro allows a bare type name, like string, as a schema.
		compact.Reset()
		compact.WriteString(strings.TrimSpace(req.Schema))
	}
	if err := s.checkLimits(compact.String()); err != nil {
		return req, "", err
	}
	return req, compact.String(), nil
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
	deleted := flag(r, "deleted")
	prefix := r.URL.Query().Get("subjectPrefix")
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []string{}
	for _, name := range s.st.subjectNames(deleted) {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out, nil
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
	name, deleted := r.PathValue("subject"), flag(r, "deleted")
	if err := s.subjectOrCatchUp(r.Context(), name, deleted); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	sub := s.st.subjects[name]
	out := []int{}
	for _, v := range sub.versions {
		if deleted || !sub.isDeleted(v) {
			out = append(out, v.version)
		}
	}
	return out, nil
}

type subjectVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
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
			if v := sub.versions[i]; deleted || !sub.isDeleted(v) {
				return v, nil
			}
		}
		return nil, errVersionNotFound(name, ver)
	}
	n, err := strconv.Atoi(ver)
	if err != nil || n < 1 {
		return nil, errInvalidVersion(ver)
	}
	for _, v := range sub.versions {
		if v.version == n && (deleted || !sub.isDeleted(v)) {
			return v, nil
		}
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
	return subjectVersion{Subject: name, Version: v.version, ID: v.id, Schema: s.st.byID[v.id].text}, nil
}

func (s *Server) getVersion(r *http.Request) (any, error) { return s.versionFromRequest(r) }

func (s *Server) getVersionSchema(r *http.Request) (any, error) {
	sv, err := s.versionFromRequest(r)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(sv.Schema), nil
}

func (s *Server) getReferencedBy(r *http.Request) (any, error) {
	if _, err := s.versionFromRequest(r); err != nil {
		return nil, err
	}
	return []int{}, nil // references are not supported, so nothing refers to anything
}

func (s *Server) postVersion(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	if err := validSubject(name); err != nil {
		return nil, err
	}
	req, text, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	if req.ID > 0 || req.Version > 0 {
		return nil, errNotPermitted("registering with a given id or version (IMPORT mode) is not supported by troupe's built-in registry")
	}
	sch, err := parse(text)
	if err != nil {
		return nil, errInvalidSchema(quote(err.Error()))
	}
	id, err := s.register(r.Context(), name, text, sch)
	if err != nil {
		return nil, err
	}
	return map[string]int{"id": id}, nil
}

func (s *Server) lookup(r *http.Request) (any, error) {
	name, deleted := r.PathValue("subject"), flag(r, "deleted")
	_, text, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	sch, err := parse(text)
	if err != nil {
		return nil, errInvalidSchema(quote(err.Error()))
	}
	if err := s.subjectOrCatchUp(r.Context(), name, deleted); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.st.versionOf(name, identity(sch), deleted)
	if v == nil {
		return nil, errSchemaNotFound(fmt.Sprintf("subject '%s' has no such schema", name))
	}
	return subjectVersion{Subject: name, Version: v.version, ID: v.id, Schema: s.st.byID[v.id].text}, nil
}

func (s *Server) deleteSubject(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	if flag(r, "permanent") {
		return nil, errNotPermitted("permanent deletion is not supported by troupe's built-in registry (ids must stay stable in its log); soft deletion is")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.subjectOrCatchUp(r.Context(), name, false); err != nil {
		return nil, err
	}
	s.mu.RLock()
	sub := s.st.subjects[name]
	var deleted []int
	for _, v := range sub.live() {
		deleted = append(deleted, v.version)
	}
	upTo := sub.lastVersion()
	s.mu.RUnlock()
	if err := s.write(r.Context(), recordKey{Kind: kindDeleteSubject, Subject: name}, deleteSubjectValue{UpTo: upTo}); err != nil {
		return nil, err
	}
	return deleted, nil
}

func (s *Server) deleteVersion(r *http.Request) (any, error) {
	if flag(r, "permanent") {
		return nil, errNotPermitted("permanent deletion is not supported by troupe's built-in registry; soft deletion is")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	sv, err := s.versionFromRequest(r)
	if err != nil {
		return nil, err
	}
	if err := s.write(r.Context(), recordKey{Kind: kindDeleteVersion, Subject: sv.Subject, Version: sv.Version}, struct{}{}); err != nil {
		return nil, err
	}
	return sv.Version, nil
}

// ---- schemas by id ----

func (s *Server) schemaByID(r *http.Request) (*stored, error) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		return nil, errSchemaNotFound(fmt.Sprintf("id %q is not a number", r.PathValue("id")))
	}
	get := func() *stored {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.st.byID[id]
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

func (s *Server) getSchemaByID(r *http.Request) (any, error) {
	st, err := s.schemaByID(r)
	if err != nil {
		return nil, err
	}
	return map[string]string{"schema": st.text}, nil
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

func (s *Server) usages(r *http.Request) ([]subjectAndVersion, error) {
	st, err := s.schemaByID(r)
	if err != nil {
		return nil, err
	}
	deleted := flag(r, "deleted")
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []subjectAndVersion{}
	for _, name := range s.st.subjectNames(true) {
		sub := s.st.subjects[name]
		for _, v := range sub.versions {
			if v.id == st.id && (deleted || !sub.isDeleted(v)) {
				out = append(out, subjectAndVersion{name, v.version})
			}
		}
	}
	return out, nil
}

func (s *Server) getIDVersions(r *http.Request) (any, error) { return s.usages(r) }

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
	return out, nil
}

// ---- compatibility ----

type compatibilityResult struct {
	IsCompatible bool     `json:"is_compatible"`
	Messages     []string `json:"messages"`
}

// checkCompatibility checks a schema against one version of a subject
// (/versions/{v}), or, without a version, against what registering it
// would check (the latest version, or all of them for a _TRANSITIVE level),
// under the subject's level. Messages name each offending field.
func (s *Server) checkCompatibility(r *http.Request) (any, error) {
	name, ver := r.PathValue("subject"), r.PathValue("version")
	_, text, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	sch, err := parse(text)
	if err != nil {
		return nil, errInvalidSchema(quote(err.Error()))
	}
	if err := s.subjectOrCatchUp(r.Context(), name, false); err != nil {
		if ver == "" {
			// Nothing to be incompatible with.
			return compatibilityResult{IsCompatible: true, Messages: []string{}}, nil
		}
		return nil, err
	}
	s.mu.RLock()
	level := s.st.level(name, s.cfg.DefaultLevel)
	against := s.existing(name)
	if ver != "" {
		v, err := s.findVersion(name, ver, false)
		if err != nil {
			s.mu.RUnlock()
			return nil, err
		}
		against = []existing{{version: v.version, schema: s.st.byID[v.id].schema}}
	}
	s.mu.RUnlock()
	msgs, err := s.compat(r.Context(), level, sch, against)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []string{}
	}
	return compatibilityResult{IsCompatible: len(msgs) == 0, Messages: msgs}, nil
}

// ---- config ----

func (s *Server) getConfig(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	s.mu.RLock()
	defer s.mu.RUnlock()
	if name == "" {
		return configValue{CompatibilityLevel: s.st.level("", s.cfg.DefaultLevel)}, nil
	}
	if sub := s.st.subjects[name]; sub != nil && sub.level != "" {
		return configValue{CompatibilityLevel: sub.level}, nil
	}
	if v := r.URL.Query().Get("defaultToGlobal"); v == "" || flag(r, "defaultToGlobal") {
		return configValue{CompatibilityLevel: s.st.level("", s.cfg.DefaultLevel)}, nil
	}
	return nil, &apiError{http.StatusNotFound, 40408, fmt.Sprintf("Subject '%s' does not have subject-level compatibility configured", name)}
}

func (s *Server) putConfig(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	if name != "" {
		if err := validSubject(name); err != nil {
			return nil, err
		}
	}
	var req struct {
		Compatibility string `json:"compatibility"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10)).Decode(&req); err != nil {
		if tooLarge(err) {
			return nil, errTooLarge(64<<10, "a config body is {\"compatibility\": \"LEVEL\"}")
		}
		return nil, errInvalidLevel("request body must be {\"compatibility\": \"LEVEL\"}: " + err.Error())
	}
	level, err := ParseLevel(quote(req.Compatibility))
	if err != nil {
		return nil, errInvalidLevel(err.Error())
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.write(r.Context(), recordKey{Kind: kindConfig, Subject: name}, configValue{CompatibilityLevel: level}); err != nil {
		return nil, err
	}
	return map[string]Level{"compatibility": level}, nil
}

func (s *Server) deleteConfig(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	s.mu.RLock()
	was := s.st.level(name, s.cfg.DefaultLevel)
	s.mu.RUnlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.write(r.Context(), recordKey{Kind: kindConfig, Subject: name}, nil); err != nil {
		return nil, err
	}
	return configValue{CompatibilityLevel: was}, nil
}

func getMode(*http.Request) (any, error) { return map[string]string{"mode": "READWRITE"}, nil }
