package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the counter shows 50 ms more; a loaded machine only
	// makes that take longer.
	start := time.Now()
	x := 0
	for {
		for range 1_000_000 {
			x++
		}
		after, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= 50*time.Millisecond {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("CPU went from %s to %s over a 30 s busy loop (x=%d)", before, after, x)
		}
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("procCPU of a pid that does not exist: no error")
	}
}

func TestProcPeakRSS(t *testing.T) {
	rss, err := procPeakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 1<<40 {
		t.Errorf("peak RSS of this test: %d bytes", rss)
	}
}

func TestFindPid(t *testing.T) {
	if got := findPid(os.Args...); got != os.Getpid() {
		t.Errorf("findPid(%q) = %d, want this process, %d", os.Args, got, os.Getpid())
	}
	if got := findPid("--no-process-has-this-argument-" + fmt.Sprint(time.Now().UnixNano())); got != 0 {
		t.Errorf("findPid of an argument nobody has = %d", got)
	}
}

func TestCPUMeterBetween(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := &cpuMeter{samples: []cpuSample{
		{at(0), 100 * time.Millisecond},
		{at(20), 110 * time.Millisecond},
		{at(40), 130 * time.Millisecond},
		{at(60), 160 * time.Millisecond},
		{at(80), 200 * time.Millisecond},
	}}
	for _, c := range []struct {
		a, b int
		want time.Duration
		ok   bool
	}{
		{20, 60, 50 * time.Millisecond, true},   // exact samples
		{25, 55, 50 * time.Millisecond, true},   // widened to 20 and 60
		{-10, 80, 100 * time.Millisecond, true}, // before the first sample: from it
		{20, 90, 0, false},                      // past the last sample
	} {
		got, ok := m.between(at(c.a), at(c.b))
		if got != c.want || ok != c.ok {
			t.Errorf("between(%d ms, %d ms) = %s, %v; want %s, %v", c.a, c.b, got, ok, c.want, c.ok)
		}
	}
}

func TestSettling(t *testing.T) {
	s := time.Second
	ms := time.Millisecond
	for _, c := range []struct {
		name                    string
		orders                  []sent
		settled, worst, worstAt time.Duration
	}{
		{"none", nil, 0, 0, 0},
		{"always steady", []sent{{0, 10 * ms}, {s, 20 * ms}}, 0, 20 * ms, s},
		{"slow start", []sent{{0, 900 * ms}, {s, 600 * ms}, {2 * s, 50 * ms}, {3 * s, 40 * ms}}, s, 900 * ms, 0},
		{"late spike", []sent{{0, 30 * ms}, {s, 20 * ms}, {2 * s, 300 * ms}, {3 * s, 20 * ms}}, 2 * s, 300 * ms, 2 * s},
		{"one never completed", []sent{{0, 30 * ms}, {s, never}, {2 * s, 20 * ms}}, s, never, s},
	} {
		settled, worst, worstAt := settling(c.orders, 100*ms)
		if settled != c.settled || worst != c.worst || worstAt != c.worstAt {
			t.Errorf("%s: settling = %s, %s at %s; want %s, %s at %s", c.name, settled, worst, worstAt, c.settled, c.worst, c.worstAt)
		}
	}
}

func TestBySecond(t *testing.T) {
	ms := time.Millisecond
	got := bySecond([]sent{{0, 10 * ms}, {500 * ms, 30 * ms}, {900 * ms, 20 * ms}, {2100 * ms, never}})
	want := []bucket{{20 * ms, 30 * ms}, {never, never}, {never, never}}
	if !slices.Equal(got, want) {
		t.Errorf("bySecond = %v, want %v", got, want)
	}
}

func TestQuantile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{0.5: 501 * time.Millisecond, 0.99: 991 * time.Millisecond, 0.999: 1000 * time.Millisecond, 1: 1000 * time.Millisecond} {
		if got := q(lat, p); got != want {
			t.Errorf("q(1..1000 ms, %v) = %s, want %s", p, got, want)
		}
	}
}

func TestProfileLines(t *testing.T) {
	out := `File: countstep
Build ID: abc
Type: cpu
Time: 2026-12-01 09:10:00 UTC
Duration: 3.21s, Total samples = 710ms (22.09%)
Showing nodes accounting for 470ms, 66.20% of 710ms total
      flat  flat%   sum%        cum   cum%
     130ms 18.31% 18.31%      130ms 18.31%  math/rand.seedrand (inline)
`
	got := profileLines(out)
	if len(got) != 4 || !strings.HasPrefix(got[0], "Duration:") || !strings.Contains(got[3], "math/rand.seedrand") {
		t.Errorf("profileLines kept %q", got)
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP troupe_step_commit_seconds x
# TYPE troupe_step_commit_seconds histogram
troupe_step_commit_seconds_bucket{app="a",step="count",le="0.001"} 0
troupe_step_commit_seconds_sum{app="a",step="count"} 2.5
troupe_step_commit_seconds_count{app="a",step="count"} 5
troupe_step_handler_seconds_count{app="a",step="count"} 40
troupe_step_transaction_aborts_total{app="a",step="count"} 1
troupe_step_events_total{app="a",outcome="processed",step="count"} 40
`)
	}))
	defer srv.Close()
	p := &stepProc{metrics: srv.URL}
	st := p.scrape(context.Background())
	want := stepStats{commits: 5, commitSeconds: 2.5, aborts: 1, handlerCalls: 40, ok: true}
	if st != want {
		t.Errorf("scrape = %+v, want %+v", st, want)
	}
	if got := st.String(); got != "5 commits (8 handler calls per commit, 500 ms per commit), 1 aborted" {
		t.Errorf("String() = %q", got)
	}
	if st := (&stepProc{}).scrape(context.Background()); st.ok {
		t.Error("scrape without a metrics URL: ok")
	}
}
