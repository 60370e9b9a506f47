package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	out, errs, code := dlqTestRun(t, context.Background(), "version")
	if code != exitOK || !strings.HasPrefix(out, "troupe ") {
		t.Fatalf("troupe version: exit %d\n%s%s", code, out, errs)
	}
	stamped := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			stamped = stamped || s.Key == "vcs.revision"
		}
	}
	old := commit
	defer func() { commit = old }()
	commit = "abc123def456"
	if c := buildCommit(); !stamped && c != "abc123def456" {
		t.Errorf("buildCommit() = %q without a VCS stamp, want the -X main.commit value", c)
	}
	commit = ""
	if c := buildCommit(); !stamped && (!strings.HasPrefix(c, "unknown") || !strings.Contains(c, "make build")) {
		t.Errorf("buildCommit() = %q: an unknown commit must say how to get one", c)
	}
}

// TestAPIWithoutScheme: --api host:port means http://host:port.
func TestAPIWithoutScheme(t *testing.T) {
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"byStatus":{"COMPLETED":3}}`))
	}))
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	out, errs, code := dlqTestRun(t, context.Background(), "saga", "stats", "--api", hostPort)
	if code != exitOK || asked != "/api/sagas/stats" || !strings.Contains(out, "3") {
		t.Fatalf("troupe saga stats --api %s: exit %d, server asked %q\n%s%s", hostPort, code, asked, out, errs)
	}
	for in, want := range map[string]string{"localhost:28080": "http://localhost:28080", "https://x:1": "https://x:1", "": ""} {
		if got := withScheme(in); got != want {
			t.Errorf("withScheme(%q) = %q, want %q", in, got, want)
		}
	}
}
