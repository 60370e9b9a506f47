package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestPathEnvEveryCommand: with TROUPE_TOPOLOGY and TROUPE_SCHEMAS set (as
// deploy/Dockerfile sets them), no flag of any command still defaults to
// the relative topology/orders.yaml or schemas, which the image's working
// directory does not have.
func TestPathEnvEveryCommand(t *testing.T) {
	t.Setenv("TROUPE_TOPOLOGY", "/etc/troupe/topology/orders.yaml")
	t.Setenv("TROUPE_SCHEMAS", "/etc/troupe/schemas")
	seen := map[string]int{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalNonPersistentFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				switch f.DefValue {
				case "topology/orders.yaml", "schemas", "schemas/":
					t.Errorf("%s --%s defaults to %q: register it with runner.TopologyFlag or runner.PathFlag so that TROUPE_TOPOLOGY / TROUPE_SCHEMAS set it", c.CommandPath(), f.Name, f.DefValue)
				case "/etc/troupe/topology/orders.yaml", "/etc/troupe/schemas":
					seen[f.DefValue]++
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	// topics, dlq, schemas, produce, tail, state rebuild, run, dev; the
	// schemas' --dir and topology validate --schemas.
	if seen["/etc/troupe/topology/orders.yaml"] < 8 || seen["/etc/troupe/schemas"] < 2 {
		t.Errorf("flags defaulting to the environment's paths: %v, want >= 8 topology and >= 2 schemas", seen)
	}
}

// A topology named by TROUPE_TOPOLOGY is the user's choice: a command that
// skips its absent default file must not skip it, and 'troupe topology
// validate' reads it without a FILE argument.
func TestPathEnvNamedFileIsUsed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	t.Setenv("TROUPE_TOPOLOGY", missing)
	out, code := runCLI(t, "produce", "--type", "OrderPlaced", "--data", "{}")
	if code != exitUsage || !strings.Contains(out, "nope.yaml") {
		t.Errorf("produce with TROUPE_TOPOLOGY=%s: exit %d, %q; want exit 2 naming the file", missing, code, out)
	}
	abs, err := filepath.Abs(topologyFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TROUPE_TOPOLOGY", abs)
	t.Setenv("TROUPE_SCHEMAS", schemaDir)
	out, code = runCLI(t, "topology", "validate")
	if code != exitOK || !strings.Contains(out, "every event type has a schema in "+schemaDir) || !strings.Contains(out, abs) {
		t.Errorf("topology validate with TROUPE_TOPOLOGY and TROUPE_SCHEMAS: exit %d, %q", code, out)
	}
}
