package auth_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupehq/troupe/pkg/auth"
)

func TestHandler(t *testing.T) {
	const write, read = "w-7f3a9c1e5b", "r-2d8e4b6a0c"
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("served")) })
	h := auth.Handler(ok, auth.Tokens{Write: write, Read: read}, auth.Options{
		Realm: "test",
		Open:  func(r *http.Request) bool { return r.URL.Path == "/healthz" },
	})
	basic := func(user, pass string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	for _, c := range []struct {
		name, method, path, authz string
		status                    int
		challenge                 bool // WWW-Authenticate expected
		errHas                    string
	}{
		{"no token", "GET", "/x", "", 401, true, "--auth-token-file or TROUPE_AUTH_TOKEN"},
		{"open path", "GET", "/healthz", "", 200, false, ""},
		{"bearer write", "POST", "/x", "Bearer " + write, 200, false, ""},
		{"bearer, any case", "DELETE", "/x", "bearer " + write, 200, false, ""},
		{"basic user:token", "POST", "/x", basic("svc", write), 200, false, ""},
		{"basic, token as the user", "POST", "/x", basic(write, ""), 401, true, "authentication required"},
		{"wrong token", "GET", "/x", "Bearer " + write + "x", 401, true, "invalid token"},
		{"a prefix of the token", "GET", "/x", "Bearer " + write[:5], 401, true, "invalid token"},
		{"read token reads", "GET", "/x", "Bearer " + read, 200, false, ""},
		{"read token by basic", "HEAD", "/x", basic("u", read), 200, false, ""},
		{"read token writes", "PUT", "/config", "Bearer " + read, 403, false, "read-only: PUT /config needs the write token"},
		{"other scheme", "GET", "/x", "Token " + write, 401, true, "authentication required"},
		{"bad base64", "GET", "/x", "Basic %%%", 401, true, "authentication required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, nil)
			if c.authz != "" {
				req.Header.Set("Authorization", c.authz)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d (body %s)", rec.Code, c.status, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); (got != "") != c.challenge || c.challenge && !strings.HasPrefix(got, `Bearer realm="test"`) {
				t.Errorf("WWW-Authenticate %q, want one: %v", got, c.challenge)
			}
			body := rec.Body.String()
			if c.status != 200 {
				var e struct{ Error string }
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, c.errHas) {
					t.Errorf("body %s (%s), want JSON with %q", body, ct, c.errHas)
				}
			} else if body != "served" {
				t.Errorf("body %q, want the handler's", body)
			}
			if strings.Contains(body, write) || strings.Contains(body, read) {
				t.Errorf("the answer echoes a token: %s", body)
			}
		})
	}
}

func TestHandlerWithoutTokensServesAll(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	rec := httptest.NewRecorder()
	auth.Handler(ok, auth.Tokens{}, auth.Options{}).ServeHTTP(rec, httptest.NewRequest("DELETE", "/subjects/x", nil))
	if rec.Code != 204 {
		t.Fatalf("status %d, want the handler's 204", rec.Code)
	}
}

func TestCheckListen(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, c := range []struct {
		addr     string
		tokens   auth.Tokens
		insecure bool
		refused  bool
	}{
		{"127.0.0.1:8081", auth.Tokens{}, false, false},
		{"[::1]:8081", auth.Tokens{}, false, false},
		{"127.0.0.2:8081", auth.Tokens{}, false, false},
		{"0.0.0.0:8081", auth.Tokens{}, false, true},
		{"[::]:8081", auth.Tokens{}, false, true},
		{"10.1.2.3:8081", auth.Tokens{}, false, true},
		{"0.0.0.0:8081", auth.Tokens{Write: "t"}, false, false},
		{"0.0.0.0:8081", auth.Tokens{}, true, false},
	} {
		err := auth.CheckListen(tcp(c.addr), c.tokens, c.insecure, "the schema registry", "--bind")
		if (err != nil) != c.refused {
			t.Errorf("%s tokens %v insecure %v: %v, want refused %v", c.addr, c.tokens.Enabled(), c.insecure, err, c.refused)
			continue
		}
		if err == nil {
			continue
		}
		for _, want := range []string{"the schema registry", "--bind", "--auth-token-file", "TROUPE_AUTH_TOKEN", "--insecure"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not name %s", c.addr, err, want)
			}
		}
		if !errors.Is(err, auth.ErrInsecure) {
			t.Errorf("%s: %v is not ErrInsecure", c.addr, err)
		}
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := auth.LoadToken(file("ok", "  s3cret\n"), "--f", "from-env"); err != nil || tok != "s3cret" {
		t.Errorf("file: %q %v, want s3cret (the file wins over the environment, trimmed)", tok, err)
	}
	if tok, err := auth.LoadToken("", "--f", " from-env "); err != nil || tok != "from-env" {
		t.Errorf("env: %q %v", tok, err)
	}
	for name, content := range map[string]string{"empty": " \n", "two lines": "a\nb\n"} {
		if _, err := auth.LoadToken(file(name, content), "--f", ""); err == nil || !strings.Contains(err.Error(), "--f") {
			t.Errorf("%s file: %v, want an error naming --f", name, err)
		}
	}
	if _, err := auth.LoadToken(filepath.Join(dir, "missing"), "--f", ""); err == nil || !strings.Contains(err.Error(), "--f") {
		t.Errorf("missing file: %v, want an error naming --f", err)
	}
	if err := (auth.Tokens{Read: "r"}).Validate(); err == nil {
		t.Error("a read token alone is valid")
	}
	if err := (auth.Tokens{Read: "r", Write: "r"}).Validate(); err == nil {
		t.Error("a read token equal to the write token is valid")
	}
}
