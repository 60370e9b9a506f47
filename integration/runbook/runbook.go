// Package runbook reads the commands of the README's runbook ("Recovering
// from failures"), in order, for the tests that run them against troupe
// dev (cmd/troupe) and against a real broker (integration): a command added,
// removed or reordered in the README without the same change in the tests
// fails them, so the runbook cannot rot.
package runbook

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
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
