// Package api is troupe's HTTP surface: /healthz, /readyz, /metrics and the
// JSON API under /api/. One Server per process; components mount their
// handlers on it and report readiness through checks.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/auth"
)

// ReadyFunc reports whether a component is ready to serve. A component that
// is restoring state answers false and says why.
type ReadyFunc func() (ready bool, reason string)

// Server serves health, readiness, metrics and API routes.
type Server struct {
	mux    *http.ServeMux
	log    zerolog.Logger
	mu     sync.Mutex
	checks map[string]ReadyFunc
	// loopback: the server is bound to a loopback address only (Bound).
	loopback bool
	tokens   auth.Tokens
}

// New returns a server whose /metrics serves gatherer.
func New(gatherer prometheus.Gatherer, log zerolog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, checks: map[string]ReadyFunc{}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return s
}

// AddReadiness registers a named readiness check; /readyz is ready only when
// every check is.
func (s *Server) AddReadiness(name string, f ReadyFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = f
}

// Bound tells the server the address it is served on: actions are allowed
// on a loopback address (Allowed).
func (s *Server) Bound(addr net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loopback = IsLoopback(addr)
}

// IsLoopback reports whether addr is a loopback address (127.0.0.0/8,
// ::1): reachable from this machine only. An unspecified address
// (0.0.0.0, ::) is not.
func IsLoopback(addr net.Addr) bool { return auth.IsLoopback(addr) }

// ErrActionsOff means the server takes no operator's actions (a dead
// letter's replay or discard): it is reachable from other machines and
// nothing protects it.
var ErrActionsOff = errors.New("actions are off")

// Actions reports whether this server takes an operator's actions, and if
// not why and what to do: only when it is bound to loopback (Bound) or
// requires a write token (RequireToken; a read token may not act).
func (s *Server) Actions() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loopback || s.tokens.Write != "" {
		return nil
	}
	return fmt.Errorf("%w: this server is reachable from other machines and unprotected; use the troupe dlq commands, give it a token (--auth-token-file), or bind --http to 127.0.0.1 (e.g. --http 127.0.0.1:8080) to act from the UI", ErrActionsOff)
}

// Allow checks that r may carry out an action: the server takes actions
// (Actions), and r comes from a page of this server, not another site
// (its Origin, when set, is this host; it is JSON, which a cross-site form
// cannot send without the browser asking first). It answers 403 or 415
// and returns false otherwise.
func (s *Server) Allow(w http.ResponseWriter, r *http.Request) bool {
	if err := s.Actions(); err != nil {
		WriteError(w, http.StatusForbidden, "%v", err)
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
		WriteError(w, http.StatusForbidden, "request from %s, not from this server's page (%s): refused", o, r.Host)
		return false
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		WriteError(w, http.StatusForbidden, "request from another site: refused")
		return false
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		WriteError(w, http.StatusUnsupportedMediaType, "send the action as JSON (Content-Type: application/json), not %q", ct)
		return false
	}
	return true
}

// Handle mounts h on pattern (net/http ServeMux syntax, e.g. "GET /api/sagas/{id}").
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// RequireToken puts the API (every route under /api/) behind t (package
// auth). /healthz, /readyz, /metrics and the UI's page and files stay
// open: probes and scrapers need no token, and the page asks for one.
// A read token may only GET. Call it before Handler.
func (s *Server) RequireToken(t auth.Tokens) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = t
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler {
	s.mu.Lock()
	t := s.tokens
	s.mu.Unlock()
	return auth.Handler(s.mux, t, auth.Options{
		Realm: "troupe api",
		Open:  func(r *http.Request) bool { return r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") },
		Error: func(w http.ResponseWriter, status int, msg string) { WriteError(w, status, "%s", msg) },
	})
}

type readiness struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := make(map[string]ReadyFunc, len(s.checks))
	for n, f := range s.checks {
		checks[n] = f
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := readiness{Ready: true, Checks: map[string]string{}}
	for _, n := range names {
		ok, reason := checks[n]()
		if ok {
			out.Checks[n] = "ready"
			continue
		}
		out.Ready = false
		out.Checks[n] = reason
	}
	status := http.StatusOK
	if !out.Ready {
		status = http.StatusServiceUnavailable
	}
	WriteJSON(w, status, out)
}

// WriteJSON writes v as an indented JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Error is the body of every API error: what went wrong, and what to do.
type Error struct {
	Error string `json:"error"`
}

// WriteError writes an Error body with the given status.
func WriteError(w http.ResponseWriter, status int, format string, args ...any) {
	WriteJSON(w, status, Error{Error: fmt.Sprintf(format, args...)})
}

// Listen binds addr now, so that a taken port is reported at start-up with
// the flag to change, rather than from a goroutine later.
func Listen(addr, flag string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another troupe running? choose another address with %s)", addr, err, flag)
	}
	return ln, nil
}

// Serve serves h on ln until ctx is done, then shuts down gracefully within
// five seconds.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down http server on %s: %w", ln.Addr(), err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
