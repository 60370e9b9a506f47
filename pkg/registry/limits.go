package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"
	"unicode/utf8"

	havro "github.com/hamba/avro/v2"
)

// Defaults of the limits in Config. A schema checked for compatibility
// costs time cubic in its nesting (hamba/avro: 125 levels 0.14 s, 250
// 1.1 s, 1,000 about 50 CPU-seconds), so the registry bounds the nesting,
// the size, how many checks run at once and for how long.
const (
	// DefaultMaxSchemaBytes bounds a schema's compact text: 256 KiB. Its
	// record in the schemas topic (the text JSON-escaped, at most twice as
	// long) then stays under Kafka's default 1 MB message limit.
	DefaultMaxSchemaBytes = 256 << 10
	// DefaultMaxSchemaDepth bounds how deeply a schema's JSON nests objects
	// and arrays: 96. A record in a record's field adds three levels
	// (object, fields array, field object), so this allows some 30 nested
	// records, far more than event schemas use.
	DefaultMaxSchemaDepth = 96
	// DefaultCheckTimeout bounds one compatibility check: 10 s.
	DefaultCheckTimeout = 10 * time.Second
	// DefaultMaxChecks is how many compatibility checks run at once: 2.
	// More wait, up to the check timeout, then get a 503.
	DefaultMaxChecks = 2
	// MaxSubjectBytes bounds a subject name. A subject is
	// <topic>-<record full name>: a topic name has at most 249 bytes.
	MaxSubjectBytes = 1024
)

// maxQuote bounds how much of a client's input an error message quotes.
const maxQuote = 256

// maxMessage bounds an error message (a list of incompatibilities can be
// long).
const maxMessage = 8 << 10

// quote renders s for an error message, cut to maxQuote bytes.
func quote(s string) string {
	if len(s) <= maxQuote {
		return s
	}
	cut := maxQuote
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

// capMessage cuts an error message to maxMessage bytes.
func capMessage(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(message cut: %d bytes)", s[:cut], len(s))
}

// jsonDepth returns how deeply text nests JSON objects and arrays (strings
// skipped), stopping as soon as it passes limit.
func jsonDepth(text string, limit int) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > deepest {
				if deepest = depth; deepest > limit {
					return deepest
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// checkLimits refuses a schema over the size or nesting limits with a 422
// that names the limit.
func (s *Server) checkLimits(text string) error {
	if n := len(text); n > s.cfg.MaxSchemaBytes {
		return &apiError{http.StatusUnprocessableEntity, 42201,
			fmt.Sprintf("Invalid schema: the schema is %d bytes (compact JSON), over the built-in registry's limit of %d bytes (registry.Config.MaxSchemaBytes)", n, s.cfg.MaxSchemaBytes)}
	}
	if d := jsonDepth(text, s.cfg.MaxSchemaDepth); d > s.cfg.MaxSchemaDepth {
		return &apiError{http.StatusUnprocessableEntity, 42201,
			fmt.Sprintf("Invalid schema: the schema nests JSON objects and arrays more than %d levels deep, the built-in registry's limit (registry.Config.MaxSchemaDepth; a nested record takes 3 levels)", s.cfg.MaxSchemaDepth)}
	}
	return nil
}

// bodyLimit bounds a request body: a schema of MaxSchemaBytes, JSON-escaped
// (at most twice as long), and the rest of the request.
func (s *Server) bodyLimit() int64 { return 2*int64(s.cfg.MaxSchemaBytes) + 64<<10 }

// errTooLarge answers a body over the limit, which why explains.
func errTooLarge(limit int64, why string) error {
	return &apiError{http.StatusRequestEntityTooLarge, 41301,
		fmt.Sprintf("request body over the built-in registry's limit of %d bytes (%s)", limit, why)}
}

// tooLarge reports whether err is http.MaxBytesReader's.
func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// parse parses an Avro schema in a cache of its own, so that versions of one
// record in different subjects never see each other, after the schemas it
// references (deps, each after those it references in turn), whose named
// types it may use. hamba/avro panics on some invalid schemas (v2.31.0:
// {"type":[],"default":null} indexes an empty union in isValidDefault); a
// panic is an invalid schema.
func parse(text string, deps ...string) (sch havro.Schema, err error) {
	defer func() {
		if p := recover(); p != nil {
			sch, err = nil, fmt.Errorf("the Avro parser failed on it (%v); check unions, defaults and names", p)
		}
	}()
	cache := &havro.SchemaCache{}
	for _, d := range deps {
		if _, err := havro.ParseWithCache(d, "", cache); err != nil {
			return nil, fmt.Errorf("a referenced schema does not parse: %w", err)
		}
	}
	return havro.ParseWithCache(text, "", cache)
}

// compat runs a compatibility check under the registry's limits: at most
// MaxChecks at once (waiting for a turn counts against the timeout), each
// answered after CheckTimeout at the latest, or as soon as ctx (the
// client's request) ends.
//
// hamba/avro cannot be interrupted inside one call (fingerprinting a deeply
// nested schema is what takes the time), so a check given up on finishes in
// the background; it keeps its turn until then, so abandoned checks still
// count against MaxChecks, and it stops between calls once ctx is done.
// Serve waits for them before it returns.
func (s *Server) compat(ctx context.Context, level Level, candidate havro.Schema, versions []existing) ([]string, error) {
	if level == None || len(versions) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	select {
	case s.checks <- struct{}{}:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &apiError{http.StatusServiceUnavailable, 50003,
				fmt.Sprintf("the built-in registry is busy: %d compatibility checks running (registry.Config.MaxChecks) for longer than %s; retry", cap(s.checks), s.cfg.CheckTimeout)}
		}
		return nil, ctx.Err()
	}
	type result struct {
		msgs []string
		err  error
	}
	done := make(chan result, 1)
	start := time.Now()
	s.checking.Add(1)
	go func() {
		defer s.checking.Done()
		defer func() { <-s.checks }()
		msgs, err := s.checker.check(ctx, level, candidate, versions)
		done <- result{msgs, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if errors.Is(r.err, context.DeadlineExceeded) {
		s.log.Warn().Dur("after", time.Since(start)).Dur("limit", s.cfg.CheckTimeout).Msg("compatibility check given up at its timeout")
		return nil, &apiError{http.StatusUnprocessableEntity, 42201,
			fmt.Sprintf("Invalid schema: checking its compatibility took longer than %s, the built-in registry's limit (registry.Config.CheckTimeout); flatten the schema", s.cfg.CheckTimeout)}
	}
	return r.msgs, r.err
}

// recovered turns a panic in a handler into a 500 in Confluent's format,
// logged with its stack, instead of a connection closed without a reply.
func (s *Server) recovered(w http.ResponseWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	s.log.Error().Str("method", r.Method).Str("path", quote(r.URL.Path)).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("registry handler panicked")
	writeError(w, &apiError{http.StatusInternalServerError, 50001, fmt.Sprintf("internal error in troupe's built-in registry (a bug; it is logged): %v", p)})
}
