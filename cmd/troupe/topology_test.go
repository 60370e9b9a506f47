package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// runCLI runs the CLI with args and returns its output and the exit code
// main would return.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return out.String(), exitOK
	}
	out.WriteString("error: " + err.Error() + "\n")
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return out.String(), exitUsage
	}
	return out.String(), exitFailure
}

func TestTopologyValidateSchemas(t *testing.T) {
	data, err := os.ReadFile(topologyFile)
	if err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "topology", "validate", topologyFile, "--schemas", schemaDir)
	if code != exitOK || !strings.Contains(out, "is valid") || !strings.Contains(out, "every event type has a schema in "+schemaDir) {
		t.Fatalf("the example: exit %d\n%s", code, out)
	}

	// PaymentAuthorized renamed everywhere: the file is consistent, but no
	// schema defines the new name.
	text := strings.ReplaceAll(string(data), "PaymentAuthorized", "PaymentApproved")
	renamed := filepath.Join(t.TempDir(), "renamed.yaml")
	if err := os.WriteFile(renamed, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	line := strings.Count(text[:strings.Index(text, "PaymentApproved")], "\n") + 1
	want := renamed + ":" + strconv.Itoa(line) + ": event type PaymentApproved (troupe.example.orders.PaymentApproved): no schema in " + schemaDir + "/"
	out, code = runCLI(t, "topology", "validate", renamed, "--schemas", schemaDir)
	other := schemaDir + "/PaymentAuthorized.avsc defines troupe.example.orders.PaymentAuthorized, which the topology does not declare"
	if code != exitUsage || !strings.Contains(out, want) || !strings.Contains(out, other) || strings.Contains(out, "is valid") {
		t.Fatalf("renamed type: exit %d, want 2 and a line %q:\n%s", code, want, out)
	}
	// --schemas '' skips the check; a directory that is not there is an error.
	if out, code = runCLI(t, "topology", "validate", renamed, "--schemas", ""); code != exitOK {
		t.Fatalf("--schemas '': exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "topology", "validate", topologyFile, "--schemas", "nowhere")
	if code != exitUsage || !strings.Contains(out, "--schemas nowhere is not a directory of .avsc files") {
		t.Fatalf("missing schema dir: exit %d\n%s", code, out)
	}
}
