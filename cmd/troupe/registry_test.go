package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"
)

// TestRegistryCommand runs `troupe registry`, talks to it with the sr
// client, and stops it as Ctrl-C would.
func TestRegistryCommand(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := freeTCPPort(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"registry", "--port", strconv.Itoa(port), "--brokers", c.ListenAddrs()[0], "--compatibility", "full", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/subjects")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not answer: %v\n%s", err, out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("registry exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cl, err := sr.NewClient(sr.URLs(url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateSchema(ctx, "x-r.R", sr.Schema{Schema: `{"type":"record","name":"R","namespace":"r","fields":[]}`}); err != nil {
		t.Fatal(err)
	}
	if lvl := cl.Compatibility(ctx); lvl[0].Err != nil || lvl[0].Level != sr.CompatFull {
		t.Fatalf("global level = %+v; want FULL from --compatibility", lvl[0])
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("registry returned %v after Ctrl-C", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("registry did not stop")
	}
}

func TestRegistryCommandBadFlags(t *testing.T) {
	s := &avroStack{brokers: "127.0.0.1:1", registry: "http://127.0.0.1:1"}
	s.expect(t, exitUsage, []string{`--compatibility: unknown compatibility level "sideways"`, "BACKWARD_TRANSITIVE"}, "registry", "--compatibility", "sideways")
	s.expect(t, exitUsage, []string{"--port 70000 is not a port"}, "registry", "--port", "70000")
}

func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if r.Header.Get("Authorization") != "Bearer s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
			}
			return
		}
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
		fmt.Fprint(w, "restoring 3 partitions")
	}))
	defer hs.Close()
	out, code := runCLI(t, "healthcheck", hs.URL+"/readyz")
	if code != exitFailure || !strings.Contains(out, "503") || !strings.Contains(out, "restoring 3 partitions") {
		t.Errorf("healthcheck of a 503: exit %d, %q; want 1 with the status and body", code, out)
	}
	status.Store(http.StatusOK)
	if out, code := runCLI(t, "healthcheck", strings.TrimPrefix(hs.URL, "http://")+"/readyz"); code != exitOK {
		t.Errorf("healthcheck of a 200 (host:port/path): exit %d, %q", code, out)
	}
	if out, code := runCLI(t, "healthcheck", hs.URL+"/token"); code != exitFailure || !strings.Contains(out, "401") {
		t.Errorf("healthcheck without the token: exit %d, %q; want 1 with the 401", code, out)
	}
	t.Setenv("TROUPE_AUTH_TOKEN", "s3cret")
	if out, code := runCLI(t, "healthcheck", hs.URL+"/token"); code != exitOK {
		t.Errorf("healthcheck with TROUPE_AUTH_TOKEN: exit %d, %q; want 0 (the token sent as a bearer token)", code, out)
	}
	if out, code := runCLI(t, "healthcheck"); code != exitUsage {
		t.Errorf("healthcheck without a URL: exit %d, %q; want 2", code, out)
	}
}
