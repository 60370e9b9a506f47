// Package runbook reads the commands of the README's runbook ("Recovering
// from failures"), in order, for the tests that run them against troupe
// dev (cmd/troupe) and against a real broker (integration): a command added,
// removed or reordered in the README without the same change in the tests
// fails them, so the runbook cannot rot.
package runbook

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Section is the heading of the runbook in the README.
const Section = "### Recovering from failures (runbook)"

var span = regexp.MustCompile("`([^`]+)`")

// Commands returns the troupe commands of the runbook section of the
// README at path, in order: lines of its code blocks that start with
// ./troupe (and their continuation lines, while a quote is open), and
// inline code that starts with "troupe " unless isName says it only names
// a command (`troupe dev`, `troupe dlq show`). Whitespace is collapsed.
func Commands(path string, isName func(cmd string) bool) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(raw)
	i := strings.Index(s, Section)
	if i < 0 {
		return nil, fmt.Errorf("%s has no section %q", path, Section)
	}
	s = s[i:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	var cmds []string
	for k, part := range strings.Split(s, "```") {
		if k%2 == 1 { // a code block
			var cur string
			for _, line := range strings.Split(part, "\n") {
				line = strings.TrimSpace(line)
				switch {
				case cur != "":
					cur += " " + line
				case strings.HasPrefix(line, "./troupe "):
					cur = line
				}
				if cur != "" && strings.Count(cur, "'")%2 == 0 {
					cmds = append(cmds, cur)
					cur = ""
				}
			}
			continue
		}
		for _, m := range span.FindAllStringSubmatch(part, -1) {
			c := strings.Join(strings.Fields(m[1]), " ")
			if strings.HasPrefix(c, "troupe ") && !isName(c) {
				cmds = append(cmds, c)
			}
		}
	}
	return cmds, nil
}

// LooksLikeName is an isName for Commands without the command tree: one or
// two lowercase words after troupe (`troupe dev`, `troupe dlq show`) name a
// command; anything with a flag or an argument is one to run.
func LooksLikeName(cmd string) bool {
	f := strings.Fields(cmd)
	if len(f) < 2 || len(f) > 3 {
		return false
	}
	for _, w := range f[1:] {
		if strings.Trim(w, "abcdefghijklmnopqrstuvwxyz") != "" {
			return false
		}
	}
	return true
}

// Words splits a runbook command line on blanks, keeping '...' together,
// and drops the leading troupe or ./troupe. Anything a shell would treat
// specially besides '...' is refused: the README's commands stay plain.
func Words(cmd string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, started := false, false
	for _, r := range cmd {
		switch {
		case r == '\'':
			in, started = !in, true
		case !in && (r == ' ' || r == '\t' || r == '\n'):
			if started {
				words = append(words, cur.String())
				cur.Reset()
				started = false
			}
		case !in && strings.ContainsRune("\"\\$|><&;*?`", r):
			return nil, fmt.Errorf("runbook command %q uses %q: keep the README's commands to plain words and '...'", cmd, r)
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if in {
		return nil, fmt.Errorf("runbook command %q has an unclosed quote", cmd)
	}
	if started {
		words = append(words, cur.String())
	}
	if len(words) == 0 || (words[0] != "troupe" && words[0] != "./troupe") {
		return nil, errors.New("runbook command " + cmd + " does not start with troupe")
	}
	return words[1:], nil
}

// Diff says how the README's commands and a test's differ, or "" when
// they are the same.
func Diff(readme, test []string) string {
	if strings.Join(readme, "\n") == strings.Join(test, "\n") {
		return ""
	}
	return fmt.Sprintf("the README's runbook commands are not the ones the test runs: update the test with the README.\nREADME:\n  %s\ntest:\n  %s",
		strings.Join(readme, "\n  "), strings.Join(test, "\n  "))
}

// Step is what one runbook command must do when a test runs it.
type Step struct {
	// Cmd is the command as the README has it; P and N stand for the dead
	// letter's partition and offset, which the runbook's saga get tells.
	Cmd string
	// Code is the exit code it must end with, Want the substrings its
	// output must hold.
	Code int
	Want []string
	// Before runs first (e.g. stop the step), After once it passed (e.g.
	// start it again).
	Before, After func()
	// Wait, when not 0, repeats the command until it passes, for at most
	// that long (the dead letter takes a few seconds).
	Wait time.Duration
}

// poll is how long Run sleeps between two tries of a step that waits.
const poll = 500 * time.Millisecond

// Run checks that steps are the commands cmds (Commands' of the README),
// in order, then runs each with run (its words after troupe, P and N
// replaced) and fails t at the first one that does not exit with its Code
// or whose output lacks a Want, naming the command and what was missing.
// After a `troupe saga get`, P and N are the one dead letter it lists.
func Run(t testing.TB, cmds []string, steps []Step, run func(args ...string) (out string, code int)) {
	t.Helper()
	var got []string
	for _, s := range steps {
		got = append(got, s.Cmd)
	}
	if d := Diff(cmds, got); d != "" {
		t.Fatal(d)
	}
	var p, n string
	for _, s := range steps {
		if s.Before != nil {
			s.Before()
		}
		args, err := Words(s.Cmd)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range args {
			switch a {
			case "P":
				args[i] = p
			case "N":
				args[i] = n
			}
		}
		out, problem := check(s, args, run)
		for deadline := time.Now().Add(s.Wait); problem != "" && time.Now().Before(deadline); {
			time.Sleep(poll)
			out, problem = check(s, args, run)
		}
		if problem != "" {
			t.Fatalf("runbook: %s: %s\n%s", s.Cmd, problem, out)
		}
		t.Logf("$ %s\n%s", s.Cmd, out)
		if strings.HasPrefix(s.Cmd, "troupe saga get") {
			p, n = deadLetter(t, s.Cmd, out)
		}
		if s.After != nil {
			s.After()
		}
	}
}

// check runs s once and says what is wrong with it, or "".
func check(s Step, args []string, run func(args ...string) (string, int)) (string, string) {
	out, code := run(args...)
	var miss []string
	for _, w := range s.Want {
		if !strings.Contains(out, w) {
			miss = append(miss, w)
		}
	}
	if code != s.Code || len(miss) > 0 {
		return out, fmt.Sprintf("exit %d (want %d), missing %q", code, s.Code, miss)
	}
	return out, ""
}

// deadLetter returns the partition and offset of the one dead letter that
// saga get's output lists.
func deadLetter(t testing.TB, cmd, out string) (p, n string) {
	t.Helper()
	var inst struct {
		DeadLetters []struct {
			Partition int32 `json:"partition"`
			Offset    int64 `json:"offset"`
		} `json:"deadLetters"`
	}
	if err := json.Unmarshal([]byte(out), &inst); err != nil || len(inst.DeadLetters) != 1 {
		t.Fatalf("%s: %v, %d dead letters:\n%s", strings.TrimPrefix(cmd, "troupe "), err, len(inst.DeadLetters), out)
	}
	return strconv.Itoa(int(inst.DeadLetters[0].Partition)), strconv.FormatInt(inst.DeadLetters[0].Offset, 10)
}
