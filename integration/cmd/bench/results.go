package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// figure is one measured number, with its unit and what it was measured
// on, as results/latest.json keeps it: runs compare figure by figure.
type figure struct {
	Bench  string         `json:"bench"`
	Metric string         `json:"metric"`
	Value  float64        `json:"value"`
	Unit   string         `json:"unit"`
	Params map[string]any `json:"params,omitempty"`
}

// record keeps a figure for the results file.
func (b *bench) record(bench, metric string, value float64, unit string, params map[string]any) {
	b.figs = append(b.figs, figure{Bench: bench, Metric: metric, Value: value, Unit: unit, Params: params})
}

// addUsage keeps the CPU and memory of the last round of a throughput
// benchmark (addRate's row).
func (b *bench) addUsage(name string, u usage) {
	for _, r := range b.rows {
		if r.name == name && r.rates != nil {
			r.usages = append(r.usages, u)
		}
	}
	if !u.ok {
		return
	}
	round := map[string]any{"round": b.rounds1[name]}
	b.record(name, "cpu_per_million_events", u.cpuPerM, "CPU-seconds", round)
	b.record(name, "peak_rss", float64(u.rss), "bytes", round)
}

// usageRows are the CPU rows: each measured processor's CPU per million
// events and peak RSS in its fastest round, beside Kafka Streams' on the
// same guarantee with one stream thread.
func (b *bench) usageRows() []*row {
	best := map[string]usage{}
	var names []string
	for _, r := range b.rows {
		if r.rates == nil || len(r.usages) != len(r.rates) {
			continue
		}
		bi := 0
		for i, x := range r.rates {
			if x > r.rates[bi] {
				bi = i
			}
		}
		if u := r.usages[bi]; u.ok {
			best[r.name] = u
			names = append(names, r.name)
		}
	}
	var rows []*row
	for _, n := range names {
		u := best[n]
		base := "kstreams-alos"
		if strings.Contains(n, "eos") {
			base = "kstreams-eos"
		}
		var vs string
		if k, ok := best[base]; ok && n != base {
			vs = fmt.Sprintf("%.1f× the events per CPU-s of %s · %.2f× its RSS", k.cpuPerM/u.cpuPerM, base, float64(u.rss)/float64(k.rss))
		}
		rows = append(rows, &row{
			name:   "cpu " + n,
			figure: fmt.Sprintf("%.1f CPU-s per M events · peak RSS %s", u.cpuPerM, mib(u.rss)),
			vs:     vs,
			note:   "process CPU (/proc utime+stime) from its first output to its last, in its fastest round; VmHWM",
		})
		b.record(n, "cpu_per_million_events_best_round", u.cpuPerM, "CPU-seconds", nil)
		b.record(n, "peak_rss_best_round", float64(u.rss), "bytes", nil)
	}
	return rows
}

// results is results/latest.json.
type results struct {
	Date    string `json:"date"`
	Machine struct {
		Cores       int    `json:"cores"`
		CPUModel    string `json:"cpu_model"`
		MemoryBytes int64  `json:"memory_bytes"`
		Note        string `json:"note,omitempty"`
		// LoadAvg is /proc/loadavg at the start and at the end of the
		// run: other work on the machine moves every figure.
		LoadAvg [2]string `json:"loadavg_start_end"`
	} `json:"machine"`
	Versions struct {
		Go      string `json:"go"`
		Kafka   string `json:"kafka"`
		FranzGo string `json:"franz_go"`
	} `json:"versions"`
	// Source is the tree measured: its commit, and the files of pkg/ and
	// integration/ that differed from it (others may be editing it).
	Source struct {
		Commit string   `json:"commit"`
		Dirty  []string `json:"dirty,omitempty"`
	} `json:"source"`
	Params  map[string]any      `json:"params"`
	Figures []figure            `json:"figures"`
	Profile map[string][]string `json:"step_eos_profile_top,omitempty"`
	Table   string              `json:"table_markdown"`
}

// writeResults writes every figure of the run to path as JSON.
func (b *bench) writeResults(path, kafkaVersion, table string) error {
	var r results
	r.Date = time.Now().UTC().Format(time.RFC3339)
	r.Machine.Cores = runtime.NumCPU()
	r.Machine.CPUModel = cpuModel()
	r.Machine.MemoryBytes = memBytes()
	r.Machine.Note = b.machineNote
	r.Machine.LoadAvg = [2]string{b.loadStart, loadAvg()}
	r.Versions.Go = runtime.Version()
	r.Versions.Kafka = kafkaVersion
	r.Versions.FranzGo = moduleVersion("github.com/twmb/franz-go")
	r.Source.Commit, r.Source.Dirty = b.commit, b.dirty
	r.Params = map[string]any{
		"events": b.events, "instances": b.instances, "partitions": b.partitions, "rounds": b.rounds,
		"saga_rates": b.sagaRates, "saga_warmup_s": b.sagaWarm.Seconds(), "saga_phase_s": b.sagaFor.Seconds(),
		"io_events": b.ioEvents, "quick": b.quick,
	}
	r.Figures = b.figs
	if len(b.profileTops) > 0 {
		r.Profile = b.profileTops
	}
	r.Table = table
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: %d figures written to %s\n", len(b.figs), path)
	return nil
}

// moduleVersion is the version of a module this binary was built with.
func moduleVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

func memBytes() int64 {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal", ""))
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseInt(f[0], 10, 64)
	return kb << 10
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// source is the commit of the tree being measured and the files of pkg/
// and integration/ that differ from it, from git (empty without it).
func source() (commit string, dirty []string) {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "", nil
	}
	commit = strings.TrimSpace(string(out))
	out, err = exec.Command("git", "status", "--porcelain", "--", "pkg", "integration", "go.mod").Output()
	if err != nil {
		return commit, nil
	}
	for l := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
		if l != "" {
			dirty = append(dirty, strings.TrimSpace(l))
		}
	}
	return commit, dirty
}
