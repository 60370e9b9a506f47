package api_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/troupehq/troupe/pkg/api"
	"github.com/troupehq/troupe/pkg/auth"
)

// RequireToken guards /api/ only: probes, scrapers and the UI's page need
// no token.
func TestRequireToken(t *testing.T) {
	srv := api.New(prometheus.NewRegistry(), zerolog.Nop())
	srv.Handle("GET /api/sagas", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { api.WriteJSON(w, 200, []string{}) }))
	srv.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("page")) }))
	srv.RequireToken(auth.Tokens{Write: "tok-1b2c3d"})
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	get := func(path, token string) *http.Response {
		req, _ := http.NewRequest("GET", h.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for path, want := range map[string]int{"/api/sagas": 401, "/api/nope": 401, "/api": 401, "/healthz": 200, "/readyz": 200, "/metrics": 200, "/": 200} {
		if resp := get(path, ""); resp.StatusCode != want {
			t.Errorf("GET %s without a token: %d, want %d", path, resp.StatusCode, want)
		} else if want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s: 401 without WWW-Authenticate", path)
		}
	}
	if resp := get("/api/sagas", "tok-1b2c3d"); resp.StatusCode != 200 {
		t.Errorf("GET /api/sagas with the token: %d", resp.StatusCode)
	}
}

// Beyond loopback, a server with a write token takes actions: the token
// protects them (a read token may only GET).
func TestActionsWithToken(t *testing.T) {
	srv := api.New(prometheus.NewRegistry(), zerolog.Nop())
	srv.Bound(&net.TCPAddr{IP: net.IPv4zero, Port: 8080})
	if err := srv.Actions(); err == nil {
		t.Fatal("actions allowed on 0.0.0.0 without a token")
	}
	srv.RequireToken(auth.Tokens{Write: "w"})
	if err := srv.Actions(); err != nil {
		t.Errorf("actions on 0.0.0.0 with a write token: %v", err)
	}
}
