package step

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected verdicts of testdata/parking.txt and retry.txt (check the diff by hand!)")

// runDecisions reads testdata file name, lines of "facts => verdict", and
// checks decide(facts) against each verdict (or rewrites them).
func runDecisions(t *testing.T, name string, decide func(t *testing.T, facts []string) string) {
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cases := 0
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		facts, want, ok := strings.Cut(line, "=>")
		if strings.HasPrefix(strings.TrimSpace(line), "#") || !ok {
			out.WriteString(line + "\n")
			continue
		}
		cases++
		got := decide(t, strings.Fields(facts))
		fmt.Fprintf(&out, "%s=> %s\n", facts, got)
		if !*rewrite && got != strings.TrimSpace(want) {
			t.Errorf("%s: %s => %s, want %s", name, strings.TrimSpace(facts), got, strings.TrimSpace(want))
		}
	}
	if cases == 0 {
		t.Fatalf("%s has no cases", name)
	}
	if *rewrite {
		if err := os.WriteFile("testdata/"+name, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func numberFact(t *testing.T, f, key string) (int, bool) {
	v, ok := strings.CutPrefix(f, key+"=")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("fact %q: %v", f, err)
	}
	return n, true
}

func TestParkingDecisions(t *testing.T) {
	runDecisions(t, "parking.txt", func(t *testing.T, facts []string) string {
		var f parkFacts
		for _, fact := range facts {
			if n, ok := numberFact(t, fact, "seq"); ok {
				f.seq = uint64(n)
				continue
			}
			if n, ok := numberFact(t, fact, "last"); ok {
				f.last = uint64(n)
				continue
			}
			switch fact {
			case "retry":
				f.retryTopic = true
			case "discard":
				f.discard = true
			case "match":
				f.discardMatches = true
			case "replay":
				f.replay = true
			case "of-head":
				f.replayOfHead = true
			case "unparked":
				f.unparked = true
			case "head=none":
			case "head=waiting":
				f.hasHead, f.status = true, headWaiting
			case "head=draining":
				f.hasHead, f.status = true, headDraining
			default:
				t.Fatalf("unknown fact %q", fact)
			}
		}
		return decidePark(f).String()
	})
}

func TestRetryDecisions(t *testing.T) {
	runDecisions(t, "retry.txt", func(t *testing.T, facts []string) string {
		var f failFacts
		var p RetryPolicy
		for _, fact := range facts {
			if n, ok := numberFact(t, fact, "attempt"); ok {
				f.attempt = n
				continue
			}
			if n, ok := numberFact(t, fact, "attempts"); ok {
				p.Attempts = n
				continue
			}
			switch fact {
			case "permanent":
				f.permanent = true
			case "shutdown":
				f.shuttingDown = true
			case "held":
				f.partitionHeld = true
			case "stop":
				p.StopPartition = true
			default:
				t.Fatalf("unknown fact %q", fact)
			}
		}
		return decideFail(p, f).String()
	})
}
