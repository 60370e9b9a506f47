package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// TestRegistryConformancePython drives `troupe registry`, on the real
// broker, with Confluent's own Python client (confluent-kafka's
// SchemaRegistryClient, AvroSerializer and AvroDeserializer): schema
// references, permanent deletion and the error codes of each wrong order,
// compatibility and mode settings per subject, /contexts, /schemas, the
// usages of an id and versions found by metadata, each checked as
// Confluent's Schema Registry API documents it (testdata/
// registry_conformance.py). Every check reports on its own, so one failure
// does not hide the others.
func TestRegistryConformancePython(t *testing.T) {
	py := pythonWithConfluentKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	reg := startTroupe(t, "registry", "registry", "--port", port, "--topic", topicName(t, "schemas"))
	url := "http://" + addr
	eventually(t, 60*time.Second, "registry answers", func() (bool, string) {
		resp, err := http.Get(url + "/subjects")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, "testdata/registry_conformance.py", url)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		t.Fatalf("python: %v", runErr)
	}
	passed := 0
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r struct {
			Check  string
			OK     bool
			Detail string
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Errorf("python printed %q", sc.Text())
			continue
		}
		if r.OK {
			passed++
		} else {
			t.Errorf("%s: %s", r.Check, r.Detail)
		}
	}
	// A script that stopped early, or lost its checks, proves nothing.
	const checks = 15
	if passed < checks && !t.Failed() {
		t.Errorf("%d checks passed, want %d", passed, checks)
	}
	if t.Failed() {
		t.Logf("python stderr:\n%s\nregistry log:\n%s", tail(stderr.String(), 40), tail(reg.log.String(), 40))
	} else if runErr != nil {
		t.Fatalf("python exited with %v although every check passed:\n%s", runErr, stderr.String())
	}
}
