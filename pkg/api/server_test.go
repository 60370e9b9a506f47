package api

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestReadyzFollowsChecks(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "troupe_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s := New(reg, zerolog.Nop())
	var restoring atomic.Bool
	restoring.Store(true)
	s.AddReadiness("step payment", func() (bool, string) {
		if restoring.Load() {
			return false, "restoring partition 3"
		}
		return true, ""
	})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "restoring partition 3") {
		t.Fatalf("while restoring: %d %s", code, body)
	}
	restoring.Store(false)
	code, body := get("/readyz")
	var r readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusOK || !r.Ready {
		t.Fatalf("after restore: %d %s %v", code, body, err)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "troupe_test_total 1") {
		t.Fatalf("metrics missing series: %s", body)
	}
}

// Actions are taken on a loopback address only: 127.0.0.0/8 and ::1, not
// an unspecified or other address.
func TestActionsOnLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.2": true, "::1": true,
		"0.0.0.0": false, "::": false, "10.1.2.3": false, "192.168.1.20": false,
	} {
		srv := New(prometheus.NewRegistry(), zerolog.Nop())
		if err := srv.Actions(); err == nil {
			t.Fatalf("actions allowed before Bound")
		}
		srv.Bound(&net.TCPAddr{IP: net.ParseIP(addr), Port: 8080})
		if err := srv.Actions(); (err == nil) != want || err != nil && !errors.Is(err, ErrActionsOff) {
			t.Errorf("bound to %s: actions %v, want allowed %v", addr, err, want)
		}
	}
}
