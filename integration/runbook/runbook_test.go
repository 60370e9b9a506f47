package runbook

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
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

// fakeT records what Run reports; its Fatal ends Run's goroutine as a
// test's does. Run calls no other method of testing.TB.
type fakeT struct {
	testing.TB
	fatal string
	logs  []string
}

func (f *fakeT) Helper()                   {}
func (f *fakeT) Logf(s string, a ...any)   { f.logs = append(f.logs, fmt.Sprintf(s, a...)) }
func (f *fakeT) Fatal(a ...any)            { f.fatal = fmt.Sprint(a...); runtime.Goexit() }
func (f *fakeT) Fatalf(s string, a ...any) { f.fatal = fmt.Sprintf(s, a...); runtime.Goexit() }

// runFake runs Run on a fakeT and returns it once Run has returned or
// failed.
func runFake(cmds []string, steps []Step, run func(args ...string) (string, int)) *fakeT {
	f := &fakeT{}
	done := make(chan struct{})
	go func() { defer close(done); Run(f, cmds, steps, run) }()
	<-done
	return f
}

func TestRun(t *testing.T) {
	cmds := []string{"troupe saga get x", "troupe dlq show --partition P --offset N", "troupe state rebuild"}
	var ran, hooks []string
	tries := 0
	run := func(args ...string) (string, int) {
		ran = append(ran, strings.Join(args, " "))
		switch args[0] {
		case "saga":
			if tries++; tries < 3 { // the dead letter is not there yet
				return `{"deadLetters": []}`, 0
			}
			return `{"deadLetters": [{"step": "inventory", "partition": 3, "offset": 17}]}`, 0
		case "dlq":
			return "step: inventory", 0
		}
		return "in use", 2
	}
	steps := []Step{
		{Cmd: cmds[0], Want: []string{`"step": "inventory"`}, Wait: 10 * time.Second},
		{Cmd: cmds[1], Want: []string{"step: inventory"},
			Before: func() { hooks = append(hooks, "before") }, After: func() { hooks = append(hooks, "after") }},
		{Cmd: cmds[2], Code: 2, Want: []string{"in use"}},
	}
	if f := runFake(cmds, steps, run); f.fatal != "" {
		t.Fatalf("Run failed: %s", f.fatal)
	}
	if got := strings.Join(ran, "|"); got != "saga get x|saga get x|saga get x|dlq show --partition 3 --offset 17|state rebuild" {
		t.Errorf("ran %s; want saga get retried until it lists the dead letter, then P and N replaced", got)
	}
	if fmt.Sprint(hooks) != "[before after]" {
		t.Errorf("hooks %v", hooks)
	}

	// The failure names the command, the exit codes and what is missing.
	steps[2].Code, steps[2].Want = 0, []string{"in use", "rebuilt"}
	tries = 0
	f := runFake(cmds, steps, run)
	if want := `runbook: troupe state rebuild: exit 2 (want 0), missing ["rebuilt"]` + "\nin use"; f.fatal != want {
		t.Errorf("Run's failure %q, want %q", f.fatal, want)
	}
	// Without Wait a step is tried once.
	steps[0].Wait, tries = 0, 0
	if f := runFake(cmds, steps, run); !strings.HasPrefix(f.fatal, `runbook: troupe saga get x: exit 0 (want 0), missing ["\"step\": \"inventory\""]`) {
		t.Errorf("Run's failure %q", f.fatal)
	}
	// A README command the test does not run, or the other way round.
	if f := runFake(cmds[:2], steps, run); !strings.Contains(f.fatal, "update the test with the README") {
		t.Errorf("Run with other commands: %q", f.fatal)
	}
	// saga get must list exactly one dead letter.
	steps[0].Want = nil
	if f := runFake(cmds, steps, run); f.fatal != "saga get x: <nil>, 0 dead letters:\n{\"deadLetters\": []}" {
		t.Errorf("Run's failure %q", f.fatal)
	}
}
