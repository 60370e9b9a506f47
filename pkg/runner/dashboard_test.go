package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

const (
	dashboardFile  = "../../deploy/grafana/troupe.json"
	alertsFile     = "../../deploy/prometheus/alerts.yml"
	alertTestsFile = "../../deploy/prometheus/alerts_test.yml"
)

// promtool finds Prometheus's promtool (Debian's prometheus package; .ci/deps
// installs it under CI, where its absence fails the test).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: install Debian's prometheus package (.ci/deps does under CI)")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The alert rules are valid, and each fires on the series of its case in
// alerts_test.yml and not on the others.
func TestAlertRules(t *testing.T) {
	runPromtool(t, "check", "rules", alertsFile)
	runPromtool(t, "test", "rules", alertTestsFile)
}

// dashboard is what the test reads of the Grafana dashboard.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Desc       string `json:"description"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// grafanaVars replaces the dashboard's variables with what Grafana would
// put there, so that promtool can parse the queries.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$app", ".*", "$saga", ".*", "$step", ".*")

// labelValues is Grafana's label_values(selector, label) of a variable.
var labelValues = regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)

// The dashboard: every panel has a title, a description, the data source
// variable and a place on the 24-column grid, panel ids are unique, and
// every query (and variable's selector) is PromQL that promtool parses.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard without a uid or title")
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	rule := func(name, expr string) {
		q, _ := json.Marshal(grafanaVars.Replace(expr)) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: %s\n        expr: %s\n", name, q)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v off the 24-column grid", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Desc == "" {
			t.Errorf("panel %d: a title and a description, please (%q)", p.ID, p.Title)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: data source %q, want the ${datasource} variable", p.ID, p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no queries", p.ID, p.Title)
		}
		for _, q := range p.Targets {
			if q.Expr == "" {
				t.Errorf("panel %d %q, query %s: no expr", p.ID, p.Title, q.RefID)
				continue
			}
			rule(fmt.Sprintf("dashboard:panel_%d_%s", p.ID, q.RefID), q.Expr)
			queries++
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		rule("dashboard:var_"+v.Name, m[1])
	}
	if queries < 10 {
		t.Fatalf("only %d queries in the dashboard", queries)
	}
	f := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", f)
}

// metricName is a troupe series name as the deploy files write it.
var metricName = regexp.MustCompile(`\btroupe_[a-z0-9_]+`)

// namedMetrics returns every troupe series the dashboard, the alert rules
// and their tests name (queries, descriptions and test series alike), with
// the file that names it.
func namedMetrics(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{dashboardFile, alertsFile, alertTestsFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricName.FindAllString(string(b), -1) {
			if _, ok := out[name]; !ok {
				out[name] = filepath.Base(f)
			}
		}
	}
	return out
}

// unexported returns the names of named (name → file) that no family of
// mfs is: a family's own name, or a histogram's _bucket, _count or _sum.
func unexported(named map[string]string, mfs map[string]*dto.MetricFamily) []string {
	var out []string
	for name, file := range named {
		if mfs[name] != nil {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && mfs[base] != nil && mfs[base].GetType() == dto.MetricType_HISTOGRAM {
				found = true
			}
		}
		if !found {
			out = append(out, name+" (in "+file+")")
		}
	}
	slices.Sort(out)
	return out
}

// unexported names what no family is, and takes a histogram's series for
// it.
func TestUnexportedNames(t *testing.T) {
	hist, counter := dto.MetricType_HISTOGRAM, dto.MetricType_COUNTER
	mfs := map[string]*dto.MetricFamily{
		"troupe_step_handler_seconds": {Type: &hist},
		"troupe_step_events_total":    {Type: &counter},
	}
	named := map[string]string{
		"troupe_step_handler_seconds_bucket": "a", "troupe_step_events_total": "a",
		"troupe_step_events_total_count": "b", "troupe_step_nope": "c",
	}
	want := []string{"troupe_step_events_total_count (in b)", "troupe_step_nope (in c)"}
	if got := unexported(named, mfs); !slices.Equal(got, want) {
		t.Fatalf("unexported: %v, want %v", got, want)
	}
}
