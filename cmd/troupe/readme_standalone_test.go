package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNoDesignCitations: the README stands on its own. DESIGN.md is not in
// the repository, so no text a user reads (the README, --help, package
// docs, the example topology and schemas, the tests) may send them there;
// cite the README's section instead (e.g. "README: Sagas").
func TestNoDesignCitations(t *testing.T) {
	// Left for the owner of pkg/step/exec.go to drop; this entry goes with it.
	re := regexp.MustCompile(`\bDESIGN\b`)
	root := "../.."
	var roots []string
	for _, d := range []string{"cmd", "pkg", "integration", "topology", "schemas", "deploy", ".ci", "README.md", "Makefile", "docker-compose.yml"} {
		roots = append(roots, filepath.Join(root, d))
	}
	found := 0
	for _, r := range roots {
		err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if d.IsDir() || strings.HasSuffix(p, "readme_standalone_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			found++
			for i, line := range strings.Split(string(b), "\n") {
				if re.MatchString(line) {
					t.Errorf("%s:%d cites DESIGN, which a user of the repository does not have; cite the README section it relies on (and put the fact there):\n\t%s", rel, i+1, strings.TrimSpace(line))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found < 100 {
		t.Fatalf("read %d files; run from cmd/troupe in the repository", found)
	}
}
