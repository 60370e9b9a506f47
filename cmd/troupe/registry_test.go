package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

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
