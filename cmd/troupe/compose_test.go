package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// docker-compose.yml cannot run here (no Docker engine), so TestCompose
// checks what it describes against the same binary and image: every troupe
// service's command is a real command whose flags and arguments parse, each
// environment variable is one a flag reads, every path is in the image that
// deploy/Dockerfile builds (the topology loads, the step exists, the schema
// directory has schemas, the state is on a volume the image's user can
// write), ports agree between the flags, the published ports, the health
// checks and Prometheus' scrape jobs, and each service waits for what it
// needs. TestComposeCheckFails proves each kind of mistake is caught.

type composeFile struct {
	XTroupe  any                        `yaml:"x-troupe"`
	XStep    any                        `yaml:"x-step"`
	Services map[string]*composeService `yaml:"services"`
	Secrets  map[string]struct {
		Environment string `yaml:"environment"`
		File        string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           *composeBuild     `yaml:"build"`
	Entrypoint      []string          `yaml:"entrypoint"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Ports           []string          `yaml:"ports"`
	Volumes         []string          `yaml:"volumes"`
	DependsOn       yaml.Node         `yaml:"depends_on"`
	Healthcheck     *composeHealth    `yaml:"healthcheck"`
	Deploy          struct{ Replicas int }
	Secrets         []string `yaml:"secrets"`
	Profiles        []string `yaml:"profiles"`
	Restart         string   `yaml:"restart"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeHealth struct {
	Test     []string `yaml:"test"`
	Interval string   `yaml:"interval"`
	Timeout  string   `yaml:"timeout"`
	Retries  int      `yaml:"retries"`
}

// dependsOn reads both forms of depends_on: a list, or a map of conditions.
func (s *composeService) dependsOn() map[string]string {
	out := map[string]string{}
	switch s.DependsOn.Kind {
	case yaml.SequenceNode:
		var l []string
		_ = s.DependsOn.Decode(&l)
		for _, n := range l {
			out[n] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct{ Condition string }
		_ = s.DependsOn.Decode(&m)
		for n, c := range m {
			out[n] = c.Condition
		}
	}
	return out
}

// mount is one entry of a service's volumes.
type mount struct{ source, target string } // source "" for an anonymous volume

func (s *composeService) mounts() []mount {
	var out []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) == 1 {
			out = append(out, mount{target: parts[0]})
		} else {
			out = append(out, mount{source: parts[0], target: parts[1]})
		}
	}
	return out
}

func isBind(source string) bool {
	return strings.HasPrefix(source, ".") || strings.HasPrefix(source, "/")
}

// containerPorts are the container side of the published ports.
func (s *composeService) containerPorts() []string {
	var out []string
	for _, p := range s.Ports {
		p = strings.TrimSuffix(strings.TrimSuffix(p, "/tcp"), "/udp")
		out = append(out, p[strings.LastIndex(p, ":")+1:])
	}
	return out
}

// bindSource checks a bind mount's source and returns its repository path.
func bindSource(where string, m mount) (string, []string) {
	rel := path.Clean(strings.TrimPrefix(m.source, "./"))
	if _, err := os.Stat(repoRoot + rel); err != nil {
		return "", []string{fmt.Sprintf("%s: mounts %s, which does not exist", where, m.source)}
	}
	return repoRoot + rel, nil
}

var kafkaVersionInPom = regexp.MustCompile(`<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>`)

// checkCompose returns every problem of a compose file.
func checkCompose(t *testing.T, data, dockerfile []byte) []string {
	t.Helper()
	var doc composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return []string{fmt.Sprintf("docker-compose.yml: %v", err)}
	}
	img := readImageLayout(t, dockerfile)
	known := binaryEnv()
	var allEnv []string
	for k := range known {
		allEnv = append(allEnv, k)
	}
	sort.Strings(allEnv)

	var problems []string
	add := func(p ...string) { problems = append(problems, p...) }
	add(checkImage(img)...)
	names := make([]string, 0, len(doc.Services))
	for n := range doc.Services {
		names = append(names, n)
	}
	sort.Strings(names)

	// The broker: the version the integration tests run, in KRaft.
	kafka, brokers := "", map[string]bool{}
	pom, err := os.ReadFile(repoRoot + "integration/kafkaharness/pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	want := kafkaVersionInPom.FindSubmatch(pom)
	for _, n := range names {
		s := doc.Services[n]
		if !strings.HasPrefix(s.Image, "apache/kafka:") {
			continue
		}
		kafka = n
		if got := strings.TrimPrefix(s.Image, "apache/kafka:"); want == nil || got != string(want[1]) {
			add(fmt.Sprintf("service %s: image %s, but the integration tests run Kafka %s (integration/kafkaharness/pom.xml)", n, s.Image, want[1]))
		}
		if !strings.Contains(s.Environment["KAFKA_PROCESS_ROLES"], "controller") {
			add(fmt.Sprintf("service %s: not in KRaft mode (KAFKA_PROCESS_ROLES has no controller)", n))
		}
		for _, l := range strings.Split(s.Environment["KAFKA_ADVERTISED_LISTENERS"], ",") {
			if u, err := url.Parse(l); err == nil {
				brokers[u.Host] = true
			}
		}
		if s.Healthcheck == nil {
			add(fmt.Sprintf("service %s: no healthcheck, so nothing can wait for the broker", n))
		}
	}
	if kafka == "" {
		add("no apache/kafka service")
	}

	// Every troupe service, parsed against the binary.
	type troupeSvc struct {
		name string
		s    *composeService
		env  map[string]string
		p    *parsed
	}
	var svcs []*troupeSvc
	byCommand := map[string]*troupeSvc{} // "run", "registry", "topics apply", "coordinator"
	for _, n := range names {
		s := doc.Services[n]
		if s.Image != "troupe:dev" {
			continue
		}
		where := "service " + n
		if s.Build == nil || path.Clean(s.Build.Dockerfile) != "deploy/Dockerfile" {
			add(where + ": not built from deploy/Dockerfile")
		}
		if s.Entrypoint != nil && strings.Join(s.Entrypoint, " ") != strings.Join(img.entry, " ") {
			add(fmt.Sprintf("%s: entrypoint %q, the image's is %q", where, s.Entrypoint, img.entry))
		}
		env := map[string]string{}
		for k, v := range img.env {
			env[k] = v
		}
		for k, v := range s.Environment {
			env[k] = v
		}
		add(checkEnv(where, s.Environment, known)...)
		for _, b := range strings.Split(env["TROUPE_BROKERS"], ",") {
			if b != "" && !brokers[b] {
				add(fmt.Sprintf("%s: TROUPE_BROKERS %s is not an advertised listener of the kafka service", where, b))
			}
		}
		ts := &troupeSvc{name: n, s: s, env: env}
		svcs = append(svcs, ts)
		if len(s.Command) == 0 {
			continue
		}
		inv := invocation{where: where, args: s.Command, env: env}
		p, pr := parseInvocation(t, inv, allEnv)
		add(pr...)
		if p == nil {
			continue
		}
		ts.p = p
		add(checkPaths(inv, p, img)...)
		key := strings.TrimPrefix(p.cmd.CommandPath(), "troupe ")
		if c, _ := p.value("coordinator"); key == "run" && c != "" {
			key = "coordinator"
		}
		byCommand[key] = ts
		// SIGTERM finishes and commits the batch in flight: compose's default
		// 10 s before SIGKILL is no more than the transaction timeout.
		if p.cmd.Name() == "run" {
			if g, err := time.ParseDuration(s.StopGracePeriod); err != nil || g <= 10*time.Second {
				add(fmt.Sprintf("%s: stop_grace_period %q: give troupe run more than 10 s (the commit interval plus --handler-timeout, within the 10 s transaction) to commit its batch on SIGTERM", where, s.StopGracePeriod))
			}
		}
		// State on a volume; one of its own per replica.
		if sd, ok := p.value("state-dir"); ok && p.cmd.Name() == "run" {
			var on *mount
			for _, m := range s.mounts() {
				if sd == m.target || strings.HasPrefix(sd, m.target+"/") {
					m := m
					on = &m
				}
			}
			switch {
			case on == nil:
				add(fmt.Sprintf("%s: --state-dir %s is on no volume: every restart would restore the whole store", where, sd))
			case s.Deploy.Replicas > 1 && on.source != "":
				add(fmt.Sprintf("%s: %d replicas share the named volume %s for --state-dir (each process needs its own): use an anonymous volume", where, s.Deploy.Replicas, on.source))
			}
		}
	}
	// The token: servers beyond loopback need it, their clients send it.
	serverHasToken := false
	for _, ts := range svcs {
		if ts.p != nil && serves(ts.p) != "" && (ts.env["TROUPE_AUTH_TOKEN_FILE"] != "" || ts.env["TROUPE_AUTH_TOKEN"] != "") {
			serverHasToken = true
		}
	}
	for _, ts := range svcs {
		hasFile := func(p string) bool {
			for _, sec := range ts.s.Secrets {
				if _, declared := doc.Secrets[sec]; declared && p == "/run/secrets/"+sec {
					return true
				}
			}
			return false
		}
		for _, sec := range ts.s.Secrets {
			if _, ok := doc.Secrets[sec]; !ok {
				add(fmt.Sprintf("service %s: secret %s is not declared under secrets:", ts.name, sec))
			}
		}
		p := ts.p
		if p == nil { // the cli: check it as a client
			p = &parsed{cmd: newRootCmd(), flags: newRootCmd().PersistentFlags()}
		}
		add(checkAuth("service "+ts.name, p, ts.env, hasFile, serverHasToken)...)
	}
	for _, ts := range svcs {
		for _, m := range ts.s.mounts() {
			if m.source != "" && !isBind(m.source) {
				if _, ok := doc.Volumes[m.source]; !ok {
					add(fmt.Sprintf("service %s: volume %s is not declared under volumes:", ts.name, m.source))
				}
			}
		}
	}

	// Ports: the flags, the published ports, the health checks, the URLs.
	ports := map[string]string{} // service -> its HTTP port
	for _, ts := range svcs {
		if ts.p == nil {
			continue
		}
		host, port := httpPort(ts.p)
		if port == "" {
			continue
		}
		where := "service " + ts.name
		ports[ts.name] = port
		if host != "0.0.0.0" && host != "" {
			add(fmt.Sprintf("%s: listens on %s:%s, which other containers cannot reach (use 0.0.0.0)", where, host, port))
		}
		for _, cp := range ts.s.containerPorts() {
			if cp != port {
				add(fmt.Sprintf("%s: publishes container port %s, but listens on %s", where, cp, port))
			}
		}
		if h := ts.s.Healthcheck; h != nil {
			if len(h.Test) < 3 || h.Test[0] != "CMD" || h.Test[1] != img.entry[0] {
				add(fmt.Sprintf("%s: healthcheck %q: the image has no shell or curl; use [CMD, %s, healthcheck, URL]", where, h.Test, img.entry[0]))
				continue
			}
			hp, pr := parseInvocation(t, invocation{where: where + " healthcheck", args: h.Test[2:], env: ts.env}, allEnv)
			add(pr...)
			if hp != nil && hp.cmd.Name() == "healthcheck" {
				u, err := url.Parse(withScheme(hp.flags.Arg(0)))
				if err != nil || u.Port() != port || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") {
					add(fmt.Sprintf("%s: healthcheck GETs %s, but the service listens on port %s", where, hp.flags.Arg(0), port))
				}
			}
		}
	}
	for _, ts := range svcs {
		for env, target := range map[string]string{"TROUPE_REGISTRY_URL": "registry", "TROUPE_API_URL": "coordinator"} {
			target := byCommand[target]
			if target == nil {
				add(fmt.Sprintf("no service runs troupe %s", map[string]string{"TROUPE_REGISTRY_URL": "registry", "TROUPE_API_URL": "run --coordinator"}[env]))
				continue
			}
			u, err := url.Parse(ts.env[env])
			if ts.env[env] == "" || err != nil || u.Hostname() != target.name || u.Port() != ports[target.name] {
				add(fmt.Sprintf("service %s: %s=%q, but %s listens at http://%s:%s", ts.name, env, ts.env[env], target.name, target.name, ports[target.name]))
			}
		}
	}

	// What each service waits for.
	need := func(ts *troupeSvc, on, cond string) {
		if on == "" {
			return
		}
		if got := ts.s.dependsOn()[on]; got != cond {
			add(fmt.Sprintf("service %s: depends_on %s is %q, want condition %s", ts.name, on, got, cond))
		}
	}
	nameOf := func(key string) string {
		if ts := byCommand[key]; ts != nil {
			return ts.name
		}
		add(fmt.Sprintf("no service runs troupe %s", key))
		return ""
	}
	setup := byCommand["topics apply"]
	if setup != nil {
		if d, _ := setup.p.value("register-schemas"); d == "" {
			add(fmt.Sprintf("service %s applies the topics but registers no schemas (--register-schemas): a first produce would fail", setup.name))
		}
		if setup.s.Restart != "no" {
			add(fmt.Sprintf("service %s is one-shot: restart must be \"no\"", setup.name))
		}
	}
	for _, ts := range svcs {
		if ts.p == nil {
			continue
		}
		switch strings.TrimPrefix(ts.p.cmd.CommandPath(), "troupe ") {
		case "run":
			need(ts, nameOf("registry"), "service_healthy")
			need(ts, nameOf("topics apply"), "service_completed_successfully")
		case "topics apply":
			need(ts, kafka, "service_healthy")
			need(ts, nameOf("registry"), "service_healthy")
		case "registry":
			need(ts, kafka, "service_healthy")
		}
	}
	for _, n := range names {
		for on, cond := range doc.Services[n].dependsOn() {
			switch target := doc.Services[on]; {
			case target == nil:
				add(fmt.Sprintf("service %s: depends_on %s, which is no service", n, on))
			case cond == "service_healthy" && target.Healthcheck == nil:
				add(fmt.Sprintf("service %s: waits for %s to be healthy, which has no healthcheck", n, on))
			}
		}
	}
	if p := doc.Services["payment"]; p == nil || p.Deploy.Replicas != 2 {
		add("service payment: want deploy.replicas 2 (two members of one consumer group)")
	}
	if c := byCommand["coordinator"]; c == nil || len(c.s.Ports) == 0 {
		add("the coordinator (troupe run --coordinator) must publish its port: the UI and the saga API")
	}

	runPorts := map[string]string{}
	for _, ts := range svcs {
		if ts.p != nil && ts.p.cmd.Name() == "run" {
			runPorts[ts.name] = ports[ts.name]
		}
	}
	add(checkPrometheus(&doc, runPorts)...)
	add(checkGrafana(&doc)...)
	return problems
}

// checkImage: the image runs as non-root, its working directory is its
// user's, and its TROUPE_TOPOLOGY and TROUPE_SCHEMAS name what it holds.
func checkImage(img *imageLayout) []string {
	var problems []string
	if img.user == "" || img.user == "root" || strings.HasPrefix(img.user, "0") {
		problems = append(problems, fmt.Sprintf("deploy/Dockerfile: USER %q: run as non-root", img.user))
	}
	if !img.isWritable(img.workdir) {
		problems = append(problems, fmt.Sprintf("deploy/Dockerfile: WORKDIR %s is not owned by the image's user", img.workdir))
	}
	if len(img.entry) == 0 || img.entry[0] != "/usr/local/bin/troupe" {
		problems = append(problems, fmt.Sprintf("deploy/Dockerfile: ENTRYPOINT %q, want the troupe binary", img.entry))
	}
	if _, ok := img.repoPath(img.entry[0]); !ok {
		problems = append(problems, "deploy/Dockerfile: the entrypoint is not in the image")
	}
	_, pr := img.checkImagePath("deploy/Dockerfile", "TROUPE_TOPOLOGY", img.env["TROUPE_TOPOLOGY"], false)
	problems = append(problems, pr...)
	_, pr = img.checkImagePath("deploy/Dockerfile", "TROUPE_SCHEMAS", img.env["TROUPE_SCHEMAS"], true)
	return append(problems, pr...)
}

// serviceWithImage is the first service (by name) whose image starts with prefix.
func serviceWithImage(doc *composeFile, prefix string) (string, *composeService) {
	names := make([]string, 0, len(doc.Services))
	for n := range doc.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(doc.Services[n].Image, prefix) {
			return n, doc.Services[n]
		}
	}
	return "", nil
}

// binds maps each bind mount's target to its repository path.
func binds(where string, s *composeService) (map[string]string, []string) {
	out, problems := map[string]string{}, []string(nil)
	for _, m := range s.mounts() {
		if !isBind(m.source) {
			continue
		}
		rp, pr := bindSource(where, m)
		problems = append(problems, pr...)
		if pr == nil {
			out[path.Clean(m.target)] = rp
		}
	}
	return out, problems
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName      string `yaml:"job_name"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// checkPrometheus: Prometheus reads the mounted config, loads the alert
// rules, and scrapes every `troupe run` service on its --http port.
func checkPrometheus(doc *composeFile, runPorts map[string]string) []string {
	n, s := serviceWithImage(doc, "prom/prometheus:")
	if s == nil {
		return []string{"no prom/prometheus service"}
	}
	where := "service " + n
	mounted, problems := binds(where, s)
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, a := range s.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	rp, ok := mounted[cfgPath]
	if !ok || rp == "" {
		return append(problems, fmt.Sprintf("%s: its config %s is not mounted from the repository", where, cfgPath))
	}
	data, err := os.ReadFile(rp)
	if err != nil {
		return append(problems, err.Error())
	}
	var cfg promConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&cfg); err != nil {
		return append(problems, fmt.Sprintf("%s: %v", rp, err))
	}
	if len(cfg.RuleFiles) == 0 {
		problems = append(problems, fmt.Sprintf("%s loads no rule_files: troupe's alerts (deploy/prometheus/alerts.yml) are not evaluated", strings.TrimPrefix(rp, repoRoot)))
	}
	for _, rf := range cfg.RuleFiles {
		if _, ok := mounted[path.Clean(rf)]; !ok {
			problems = append(problems, fmt.Sprintf("%s: rule file %s is not mounted into %s", strings.TrimPrefix(rp, repoRoot), rf, where))
		}
	}
	scraped := map[string]bool{} // "service:port"
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			for _, name := range d.Names {
				scraped[fmt.Sprintf("%s:%d", name, d.Port)] = true
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				scraped[tg] = true
			}
		}
	}
	for target := range scraped {
		if host, _, _ := strings.Cut(target, ":"); doc.Services[host] == nil {
			problems = append(problems, fmt.Sprintf("%s scrapes %s, which is no service", strings.TrimPrefix(rp, repoRoot), target))
		}
	}
	for svc, port := range runPorts {
		if !scraped[svc+":"+port] {
			problems = append(problems, fmt.Sprintf("service %s (troupe run, /metrics on port %s) is not scraped by %s", svc, port, strings.TrimPrefix(rp, repoRoot)))
		}
	}
	sort.Strings(problems)
	return problems
}

// checkGrafana: the data source points at the Prometheus service, and the
// dashboard is mounted where the provisioned provider reads, using a data
// source that exists.
func checkGrafana(doc *composeFile) []string {
	n, s := serviceWithImage(doc, "grafana/grafana:")
	if s == nil {
		return []string{"no grafana/grafana service"}
	}
	promName, _ := serviceWithImage(doc, "prom/prometheus:")
	where := "service " + n
	mounted, problems := binds(where, s)
	prov, ok := mounted["/etc/grafana/provisioning"]
	if !ok {
		return append(problems, where+": nothing mounted at /etc/grafana/provisioning")
	}
	uids := map[string]bool{}
	dsFiles, _ := filepath.Glob(prov + "/datasources/*.yml")
	for _, f := range dsFiles {
		var ds struct {
			Datasources []struct{ Name, UID, Type, URL string } `yaml:"datasources"`
		}
		data, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(data, &ds); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f, err))
		}
		for _, d := range ds.Datasources {
			uids[d.UID] = true
			if d.Type != "prometheus" {
				continue
			}
			if u, err := url.Parse(d.URL); err != nil || u.Hostname() != promName || u.Port() != "9090" {
				problems = append(problems, fmt.Sprintf("%s: data source %s at %s, but Prometheus is http://%s:9090", strings.TrimPrefix(f, repoRoot), d.Name, d.URL, promName))
			}
		}
	}
	if len(uids) == 0 {
		problems = append(problems, where+": no data source provisioned under "+strings.TrimPrefix(prov, repoRoot)+"/datasources")
	}
	dashFiles, _ := filepath.Glob(prov + "/dashboards/*.yml")
	dashboards := 0
	for _, f := range dashFiles {
		var dp struct {
			Providers []struct {
				Name    string
				Options struct{ Path string }
			} `yaml:"providers"`
		}
		data, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(data, &dp); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f, err))
		}
		for _, p := range dp.Providers {
			for target, rp := range mounted {
				if path.Dir(target) != path.Clean(p.Options.Path) || !strings.HasSuffix(target, ".json") {
					continue
				}
				dashboards++
				if rp != "" {
					problems = append(problems, checkDashboardUIDs(rp, uids)...)
				}
			}
		}
	}
	if dashboards == 0 {
		problems = append(problems, where+": no dashboard .json is mounted where a provisioned dashboard provider reads")
	}
	return problems
}

// checkDashboardUIDs: every data source uid the dashboard names (other than
// a ${variable}) is provisioned.
func checkDashboardUIDs(file string, uids map[string]bool) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return []string{err.Error()}
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return []string{fmt.Sprintf("%s: %v", file, err)}
	}
	var problems []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ds, ok := x["datasource"].(map[string]any); ok {
				if uid, _ := ds["uid"].(string); uid != "" && !strings.HasPrefix(uid, "$") && !uids[uid] {
					problems = append(problems, fmt.Sprintf("%s uses data source uid %q, which is not provisioned", strings.TrimPrefix(file, repoRoot), uid))
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return problems
}

func readCompose(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(repoRoot + "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCompose(t *testing.T) {
	for _, p := range checkCompose(t, readCompose(t), readDockerfile(t)) {
		t.Error(p)
	}
}

// TestComposeCheckFails: each kind of mistake in docker-compose.yml is
// caught, naming what is wrong.
func TestComposeCheckFails(t *testing.T) {
	orig, origDocker := string(readCompose(t)), string(readDockerfile(t))
	cases := []struct{ name, old, new, want string }{
		{"unknown flag", `"--step", "payment"`, `"--step", "payment", "--no-such-flag", "x"`, "unknown flag: --no-such-flag"},
		{"unknown command", `["topics", "apply",`, `["topic", "apply",`, `"topic"`},
		{"unknown step", `"--step", "shipping"`, `"--step", "shiping"`, "--step shiping is not a step"},
		{"unknown env", "TROUPE_LOG_FORMAT: json", "TROUPE_LOGFORMAT: json", "TROUPE_LOGFORMAT is read by no troupe flag"},
		{"schema dir not in image", `"--register-schemas", "/etc/troupe/schemas"`, `"--register-schemas", "/etc/troupe/schema"`, "--register-schemas /etc/troupe/schema is not in the image"},
		{"no schemas", `"--register-schemas", "/etc/troupe/schemas"`, `"--register-schemas", ""`, "registers no schemas"},
		{"port mismatch", `"--step", "shipping", "--state-dir", "/var/lib/troupe/state", "--http", "0.0.0.0:8090"`, `"--step", "shipping", "--state-dir", "/var/lib/troupe/state", "--http", "0.0.0.0:8091"`, "service shipping (troupe run, /metrics on port 8091) is not scraped"},
		{"loopback", `"--step", "inventory", "--state-dir", "/var/lib/troupe/state", "--http", "0.0.0.0:8090"`, `"--step", "inventory", "--state-dir", "/var/lib/troupe/state", "--http", "127.0.0.1:8090"`, "other containers cannot reach"},
		{"state off volume", `"--coordinator", "order-fulfillment", "--state-dir", "/var/lib/troupe/state"`, `"--coordinator", "order-fulfillment", "--state-dir", "/tmp/state"`, "--state-dir /tmp/state is on no volume"},
		{"shared state", `volumes: ["/var/lib/troupe"]`, `volumes: ["payment-state:/var/lib/troupe"]`, "share the named volume payment-state"},
		{"kafka version", "apache/kafka:4.3.1", "apache/kafka:4.1.0", "the integration tests run Kafka 4.3.1"},
		{"no wait for setup", "    setup: {condition: service_completed_successfully}\n", "", "depends_on setup is \"\""},
		{"registry url", "TROUPE_REGISTRY_URL: http://registry:8081", "TROUPE_REGISTRY_URL: http://registry:8082", "TROUPE_REGISTRY_URL=\"http://registry:8082\""},
		{"one payment", "deploy: {replicas: 2}", "deploy: {replicas: 1}", "want deploy.replicas 2"},
		{"unknown key", "    restart: \"no\"\n\n  # Two", "    restrat: \"no\"\n\n  # Two", "field restrat not found"},
		// deploy/Dockerfile
		{"image topology", "TROUPE_TOPOLOGY=/etc/troupe/topology/orders.yaml", "TROUPE_TOPOLOGY=/etc/troupe/orders.yaml", "TROUPE_TOPOLOGY /etc/troupe/orders.yaml is not in the image"},
		{"image root", "USER 65532:65532", "USER root", "run as non-root"},
		{"image schemas", "COPY schemas /etc/troupe/schemas", "COPY schemas /etc/troupe/avro", "TROUPE_SCHEMAS /etc/troupe/schemas is not in the image"},
		{"state not writable", "--chown=65532:65532 /layout/var/lib/troupe", "/layout/var/lib/troupe", "is not under a directory the image's user"},
		{"no token", "    TROUPE_AUTH_TOKEN_FILE: /run/secrets/troupe-token\n", "", "serves the schema registry on 0.0.0.0 without a token"},
		{"secret not mounted", "  secrets: [troupe-token]\n", "", "the token file /run/secrets/troupe-token is not mounted from a secret"},
		{"secret undeclared", "secrets:\n  troupe-token:\n    environment: TROUPE_TOKEN\n", "", "secret troupe-token is not declared"},
		{"short grace", "stop_grace_period: 30s", "stop_grace_period: 5s", "stop_grace_period \"5s\""},
		{"missing mount", "./deploy/prometheus/prometheus.yml:", "./deploy/prometheus/prom.yml:", "mounts ./deploy/prometheus/prom.yml, which does not exist"},
		{"missing alerts", "./deploy/prometheus/alerts.yml:", "./deploy/prometheus/alert.yml:", "mounts ./deploy/prometheus/alert.yml, which does not exist"},
		{"rules not mounted", "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro", "./deploy/prometheus/alerts.yml:/etc/prometheus/rules.yml:ro", "rule file /etc/prometheus/alerts.yml is not mounted"},
		{"dashboard elsewhere", "troupe.json:/etc/grafana/dashboards/troupe.json:ro", "troupe.json:/etc/grafana/troupe.json:ro", "no dashboard .json is mounted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			compose, docker := orig, origDocker
			switch {
			case strings.Contains(orig, c.old):
				compose = strings.Replace(orig, c.old, c.new, 1)
			case strings.Contains(origDocker, c.old):
				docker = strings.Replace(origDocker, c.old, c.new, 1)
			default:
				t.Fatalf("neither docker-compose.yml nor deploy/Dockerfile has %q any more: update this case", c.old)
			}
			problems := checkCompose(t, []byte(compose), []byte(docker))
			if !strings.Contains(strings.Join(problems, "\n"), c.want) {
				t.Errorf("with %q for %q, the problems do not say %q:\n%s", c.new, c.old, c.want, strings.Join(problems, "\n"))
			}
		})
	}
}
