package main

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// docker-compose.yml cannot run here (no Docker engine), so this checks
// what it describes against the same binary: every troupe service's command
// is a real command whose flags parse, and its topology file is valid.
func TestComposeCommandsParse(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, svc := range doc.Services {
		if svc.Image != "troupe:dev" || len(svc.Command) == 0 {
			continue
		}
		n++
		root := newRootCmd()
		cmd, rest, err := root.Find(svc.Command)
		if err != nil || cmd == root {
			t.Errorf("service %s: %v is not a troupe command: %v", name, svc.Command, err)
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("service %s: flags of %v: %v", name, svc.Command, err)
			continue
		}
		if f := cmd.Flags().Lookup("topology"); f != nil && f.Changed {
			// The image copies topology/ to /etc/troupe/topology.
			path := "../../topology/" + f.Value.String()[len("/etc/troupe/topology/"):]
			if _, err := loadTopology(path); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
		if f := cmd.Flags().Lookup("step"); f != nil && f.Changed {
			topo, _ := loadTopology("../../topology/orders.yaml")
			if _, ok := topo.Step(f.Value.String()); !ok {
				t.Errorf("service %s: unknown step %s", name, f.Value)
			}
		}
	}
	if n < 5 {
		t.Fatalf("found %d troupe services in docker-compose.yml, want at least 5", n)
	}
}
