// Package auth is the bearer-token authentication of troupe's HTTP servers:
// the built-in schema registry and the saga API. A server holds a write
// token (every request) and optionally a read token (requests that change
// nothing). A client sends one as "Authorization: Bearer <token>", or as
// the password of HTTP basic auth ("user:token", what Confluent's clients
// send for basic.auth.user.info; the user name is ignored).
//
// A server that listens beyond loopback must have a token, or be told
// otherwise (CheckListen): an open registry lets anyone delete subjects or
// set compatibility to NONE.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// The settings, as the troupe CLI names them, for messages that say what to
// set.
const (
	TokenFlag        = "--auth-token-file"
	TokenEnv         = "TROUPE_AUTH_TOKEN"
	TokenFileEnv     = "TROUPE_AUTH_TOKEN_FILE"
	ReadTokenFlag    = "--auth-read-token-file"
	ReadTokenEnv     = "TROUPE_AUTH_READ_TOKEN"
	ReadTokenFileEnv = "TROUPE_AUTH_READ_TOKEN_FILE"
	InsecureFlag     = "--insecure"
)

// Hint is the fix for a client without the token, for error messages.
const Hint = "set " + TokenFlag + " or " + TokenEnv

// Tokens are the tokens a server accepts. The zero value accepts every
// request: no authentication.
type Tokens struct {
	// Write allows every request.
	Write string
	// Read allows only requests that change nothing (Options.Read);
	// optional.
	Read string
}

// Enabled reports whether t requires a token.
func (t Tokens) Enabled() bool { return t.Write != "" || t.Read != "" }

// Options say which requests need which token and how to answer a refusal.
type Options struct {
	// Realm names the server in WWW-Authenticate, e.g. "troupe registry".
	Realm string
	// Open reports the requests that need no token (health, metrics, a
	// page). Default: none.
	Open func(*http.Request) bool
	// Read reports the requests a read token may make. Default: GET and
	// HEAD.
	Read func(*http.Request) bool
	// Error writes a refusal: status 401 or 403 and what to do. Default: a
	// JSON body {"error": msg}.
	Error func(w http.ResponseWriter, status int, msg string)
}

// Handler returns h behind t: requests without a token t accepts get a 401
// with WWW-Authenticate, read-token requests Options.Read does not allow a
// 403. With no tokens it returns h itself. Tokens are compared in constant
// time and never logged or echoed.
func Handler(h http.Handler, t Tokens, o Options) http.Handler {
	if !t.Enabled() {
		return h
	}
	if o.Read == nil {
		o.Read = func(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }
	}
	if o.Error == nil {
		o.Error = writeJSONError
	}
	write, read := digest(t.Write), digest(t.Read)
	challenge := fmt.Sprintf("Bearer realm=%q", o.Realm)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Open != nil && o.Open(r) {
			h.ServeHTTP(w, r)
			return
		}
		given, ok := credential(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", challenge)
			o.Error(w, http.StatusUnauthorized, "authentication required: send the token in an Authorization header, as a bearer token or as the password of basic auth (troupe: "+Hint+")")
			return
		}
		g := digest(given)
		// Both comparisons run whatever the outcome, so that timing says
		// nothing about which token (if any) was nearly right.
		isWrite := t.Write != "" && subtle.ConstantTimeCompare(g[:], write[:]) == 1
		isRead := t.Read != "" && subtle.ConstantTimeCompare(g[:], read[:]) == 1
		switch {
		case isWrite:
		case isRead && o.Read(r):
		case isRead:
			o.Error(w, http.StatusForbidden, fmt.Sprintf("the token is read-only: %s %s needs the write token (%s)", r.Method, r.URL.Path, TokenFlag))
			return
		default:
			w.Header().Set("WWW-Authenticate", challenge+`, error="invalid_token"`)
			o.Error(w, http.StatusUnauthorized, "invalid token (troupe: "+Hint+" to the server's token)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// digest hashes a token so that comparisons take the same time whatever
// the lengths.
func digest(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

// credential is the token of r's Authorization header: a bearer token, or
// the password of basic auth.
func credential(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Bearer") && rest != "":
		return rest, true
	case strings.EqualFold(scheme, "Basic"):
		b, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", false
		}
		_, pass, ok := strings.Cut(string(b), ":")
		return pass, ok && pass != ""
	}
	return "", false
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Validate reports a read token without a write token, or one equal to
// it.
func (t Tokens) Validate() error {
	switch {
	case t.Read != "" && t.Write == "":
		return fmt.Errorf("a read token (%s) needs a write token too: set %s or %s", ReadTokenFlag, TokenFlag, TokenEnv)
	case t.Read != "" && t.Read == t.Write:
		return fmt.Errorf("the read token (%s) is the write token: choose two different tokens", ReadTokenFlag)
	}
	return nil
}

// LoadToken is the token in file (whitespace around it trimmed), or
// fromEnv when file is empty. flag names the file's setting in errors.
func LoadToken(file, flag, fromEnv string) (string, error) {
	if file == "" {
		return strings.TrimSpace(fromEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the token file %s: %w (set %s to a readable file)", flag, err, flag)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the token file %s (%s) is empty", file, flag)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("the token file %s (%s) has more than one line: put the token alone in it", file, flag)
	}
	return tok, nil
}

// ErrInsecure means a server would listen beyond loopback without a token.
var ErrInsecure = errors.New("no authentication on a non-loopback address")

// CheckListen refuses (ErrInsecure) to serve what on addr, when addr is not
// a loopback address, without a token, unless insecure (the --insecure
// flag, for a lab) says so. what names the server, e.g. "the schema
// registry"; flag is the setting that chose addr.
func CheckListen(addr net.Addr, t Tokens, insecure bool, what, flag string) error {
	if t.Enabled() || insecure || IsLoopback(addr) {
		return nil
	}
	return insecureError(fmt.Sprintf("refusing to serve %s on %s (%s) without a token: set %s (or %s, or the token itself in %s), "+
		"listen on 127.0.0.1, or pass %s to serve it open (a lab only)", what, addr, flag, TokenFlag, TokenFileEnv, TokenEnv, InsecureFlag))
}

// insecureError is CheckListen's refusal; it is ErrInsecure.
type insecureError string

func (e insecureError) Error() string        { return string(e) }
func (e insecureError) Is(target error) bool { return target == ErrInsecure }

// IsLoopback reports whether addr (a listener's) is a loopback address
// (127.0.0.0/8, ::1): reachable from this machine only. An unspecified
// address (0.0.0.0, ::) is not.
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case nil:
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}
