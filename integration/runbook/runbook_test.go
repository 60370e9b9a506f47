package runbook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	md := "# x\n`troupe a --b` before\n" + Section + "\nRun `troupe dlq list\n  --step x` then\n\n```\n./troupe produce --data '{\"a\":\n  1}'\n# note\n```\nand `troupe dev`, `troupe_metric`, `--all`.\n## Next\n`troupe after`\n"
	f := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(f, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Commands(f, func(c string) bool { return c == "troupe dev" })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"troupe dlq list --step x", `./troupe produce --data '{"a": 1}'`}
	if d := Diff(got, want); d != "" {
		t.Error(d)
	}
}

func TestWords(t *testing.T) {
	for in, want := range map[string]string{
		"troupe dlq list --step x":           "dlq|list|--step|x",
		`./troupe produce --data '{"a": 1}'`: `produce|--data|{"a": 1}`,
	} {
		got, err := Words(in)
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("Words(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"troupe x 'open", "troupe x | jq", "kafka-topics --list", `troupe "x"`} {
		if _, err := Words(bad); err == nil {
			t.Errorf("Words(%q) accepted", bad)
		}
	}
}

func TestLooksLikeName(t *testing.T) {
	for c, want := range map[string]bool{"troupe dev": true, "troupe dlq show": true, "troupe saga get o-err": false, "troupe dlq list --step x": false, "troupe state rebuild --step payment": false} {
		if got := LooksLikeName(c); got != want {
			t.Errorf("LooksLikeName(%q) = %v", c, got)
		}
	}
}
