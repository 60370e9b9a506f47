package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Mode is a registry mode, global or per subject (GET|PUT|DELETE
// /mode[/{subject}]).
type Mode string

// The modes of the Confluent API that this registry serves.
const (
	// ReadWrite: schemas may be registered and deleted. The default.
	ReadWrite Mode = "READWRITE"
	// ReadOnly: registering and deleting are refused with 42205.
	ReadOnly Mode = "READONLY"
	// ReadOnlyOverride: as ReadOnly (Confluent deprecated it for ReadOnly).
	ReadOnlyOverride Mode = "READONLY_OVERRIDE"
	// Import: schemas may be registered with the id (and version) they
	// have in another registry, without compatibility checks. Set it on a
	// registry (or subject) without live schemas, or with force=true.
	Import Mode = "IMPORT"
)

func parseMode(s string) (Mode, error) {
	m := Mode(strings.ToUpper(strings.TrimSpace(s)))
	switch m {
	case ReadWrite, ReadOnly, ReadOnlyOverride, Import:
		return m, nil
	}
	return "", &apiError{http.StatusUnprocessableEntity, 42204,
		fmt.Sprintf("Invalid mode %q. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT (troupe's built-in registry has no FORWARD mode)", quote(s))}
}

// ---- compatibility ----

type compatibilityResult struct {
	IsCompatible bool     `json:"is_compatible"`
	Messages     []string `json:"messages"`
}

// checkCompatibility checks a schema against one version of a subject
// (/versions/{v}), or, without a version, against what registering it
// would check (the latest version, or all of them for a _TRANSITIVE level),
// under the subject's level. Messages name each offending field. As in
// Confluent's registry, "latest" of a subject without versions is
// compatible (nothing to break), a numbered version that does not exist is
// a 40402.
func (s *Server) checkCompatibility(r *http.Request) (any, error) {
	name, ver := r.PathValue("subject"), r.PathValue("version")
	req, err := s.readSchema(r)
	if err != nil {
		return nil, err
	}
	latest := ver == "latest" || ver == "-1"
	if n, err := strconv.Atoi(ver); ver != "" && !latest && (err != nil || n < 1) {
		return nil, errInvalidVersion(ver)
	}
	if err := s.subjectOrCatchUp(r.Context(), name, false); err != nil && !isCode(err, 40401) {
		return nil, err
	}
	s.mu.RLock()
	c, err := s.candidate(req)
	if err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	level := s.st.level(name, s.cfg.DefaultLevel)
	var against []existing
	if ver == "" {
		against = s.existing(name)
	} else if v, err := s.findVersion(name, ver, false); err == nil {
		against = []existing{{version: v.version, schema: s.st.byID[v.id].schema}}
	} else if !latest {
		s.mu.RUnlock()
		return nil, errVersionNotFound(name, ver)
	}
	s.mu.RUnlock()
	msgs, err := s.compat(r.Context(), level, c.schema, against)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []string{}
	}
	return compatibilityResult{IsCompatible: len(msgs) == 0, Messages: msgs}, nil
}

func isCode(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Code == code
}

// ---- config ----

// getConfig returns the global level, or a subject's: 40408 when the
// subject has none of its own, unless defaultToGlobal=true.
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
	if flag(r, "defaultToGlobal") {
		return configValue{CompatibilityLevel: s.st.level("", s.cfg.DefaultLevel)}, nil
	}
	return nil, &apiError{http.StatusNotFound, 40408, fmt.Sprintf("Subject '%s' does not have subject-level compatibility configured (GET /config/%s?defaultToGlobal=true gives the level that applies)", quote(name), quote(name))}
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

// deleteConfig removes a subject's level (40401 when it has none), or the
// global one, and returns what it was.
func (s *Server) deleteConfig(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	was := s.st.level(name, s.cfg.DefaultLevel)
	sub := s.st.subjects[name]
	s.mu.RUnlock()
	if name != "" && (sub == nil || sub.level == "") {
		return nil, errSubjectNotFound(name)
	}
	if err := s.write(r.Context(), recordKey{Kind: kindConfig, Subject: name}, nil); err != nil {
		return nil, err
	}
	return configValue{CompatibilityLevel: was}, nil
}

// ---- mode ----

// getMode returns the global mode, or a subject's: 40409 when the subject
// has none of its own, unless defaultToGlobal=true.
func (s *Server) getMode(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	s.mu.RLock()
	defer s.mu.RUnlock()
	if sub := s.st.subjects[name]; name == "" || flag(r, "defaultToGlobal") || (sub != nil && sub.mode != "") {
		return modeValue{Mode: s.st.modeOf(name)}, nil
	}
	return nil, &apiError{http.StatusNotFound, 40409, fmt.Sprintf("Subject '%s' does not have subject-level mode configured (GET /mode/%s?defaultToGlobal=true gives the mode that applies)", quote(name), quote(name))}
}

// putMode sets the global mode or a subject's. IMPORT needs a registry (or
// subject) without live schemas, unless force=true.
func (s *Server) putMode(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	if name != "" {
		if err := validSubject(name); err != nil {
			return nil, err
		}
	}
	var req struct {
		Mode string `json:"mode"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10)).Decode(&req); err != nil {
		if tooLarge(err) {
			return nil, errTooLarge(64<<10, "a mode body is {\"mode\": \"MODE\"}")
		}
		return nil, &apiError{http.StatusUnprocessableEntity, 42204, "Invalid mode: request body must be {\"mode\": \"MODE\"}: " + err.Error()}
	}
	mode, err := parseMode(req.Mode)
	if err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.catchUp(r.Context()); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if mode == Import && s.st.modeOf(name) != Import && !flag(r, "force") {
		var live []string
		for _, n := range s.st.subjectNames(false) {
			if name == "" || n == name {
				live = append(live, n)
			}
		}
		if len(live) > 0 {
			s.mu.RUnlock()
			return nil, errNotPermitted(fmt.Sprintf("Cannot import since found existing subjects (%s); delete them, or add force=true", quote(strings.Join(live, ", "))))
		}
	}
	s.mu.RUnlock()
	if err := s.write(r.Context(), recordKey{Kind: kindMode, Subject: name}, modeValue{Mode: mode}); err != nil {
		return nil, err
	}
	return modeValue{Mode: mode}, nil
}

// deleteMode removes a subject's mode (40401 when it has none), or resets
// the global one, and returns what it was.
func (s *Server) deleteMode(r *http.Request) (any, error) {
	name := r.PathValue("subject")
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	was := s.st.modeOf(name)
	sub := s.st.subjects[name]
	s.mu.RUnlock()
	if name != "" && (sub == nil || sub.mode == "") {
		return nil, errSubjectNotFound(name)
	}
	if err := s.write(r.Context(), recordKey{Kind: kindMode, Subject: name}, nil); err != nil {
		return nil, err
	}
	return modeValue{Mode: was}, nil
}
