package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/troupehq/troupe/pkg/topology"
)

// TestKubernetes checks troupe's side of deploy/k8s: every troupe container
// runs a real command whose flags and arguments parse, reads only
// environment variables a flag reads, names paths its pod has (the image,
// plus its ConfigMap and emptyDir mounts: the topology loads and has the
// step), gives a step the grace to finish its batch, and serves the probes
// on its --http port; the topology ConfigMap is topology/orders.yaml and
// strimzi/kafkatopics.yaml is what `troupe topics plan --format strimzi`
// prints. deploy/k8s/validate (its own module, with k8s.io/api) checks the
// same manifests against the Kubernetes types.

const k8sDir = repoRoot + "deploy/k8s/"

type k8sKustomization struct {
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name     string   `yaml:"name"`
		Literals []string `yaml:"literals"`
		Files    []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
	Containers                    []k8sContainer `yaml:"containers"`
	Volumes                       []struct {
		Name      string                 `yaml:"name"`
		ConfigMap *struct{ Name string } `yaml:"configMap"`
		Secret    *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		EmptyDir any `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func readKustomization(t *testing.T, dir string) k8sKustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k k8sKustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return k
}

func decodeK8sFile(t *testing.T, file string) []k8sObject {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, o)
	}
}

// checkKubernetes returns every troupe-side problem of the base (and the
// example overlay's environment) under dir.
func checkKubernetes(t *testing.T, dir string, dockerfile []byte) []string {
	t.Helper()
	img := readImageLayout(t, dockerfile)
	known := binaryEnv()
	var allEnv []string
	for k := range known {
		allEnv = append(allEnv, k)
	}
	sort.Strings(allEnv)
	var problems []string
	add := func(p ...string) { problems = append(problems, p...) }

	base := filepath.Join(dir, "base")
	k := readKustomization(t, base)
	literals := map[string]map[string]string{}
	cmDirs := map[string]string{} // generated ConfigMap -> the repository dir of its files
	for _, g := range k.ConfigMapGenerator {
		literals[g.Name] = map[string]string{}
		for _, l := range g.Literals {
			key, v, _ := strings.Cut(l, "=")
			literals[g.Name][key] = v
		}
		for _, f := range g.Files {
			cmDirs[g.Name] = filepath.Join(base, path.Dir(f))
		}
		add(checkEnv("base configMapGenerator "+g.Name, literals[g.Name], known)...)
	}
	over := readKustomization(t, filepath.Join(dir, "overlays/example"))
	for _, g := range over.ConfigMapGenerator {
		env := map[string]string{}
		for _, l := range g.Literals {
			key, v, _ := strings.Cut(l, "=")
			env[key] = v
		}
		add(checkEnv("overlay configMapGenerator "+g.Name, env, known)...)
	}

	// The topology ConfigMap is the repository's topology.
	want, err := os.ReadFile(repoRoot + "topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(base, "topology/orders.yaml")); err != nil || !bytes.Equal(got, want) {
		add("deploy/k8s/base/topology/orders.yaml differs from topology/orders.yaml: copy it (cp topology/orders.yaml deploy/k8s/base/topology/)")
	}

	runs := 0
	setup := false
	type authCheck struct {
		where   string
		p       *parsed
		env     map[string]string
		secrets []string // mount paths of secret volumes
	}
	var auths []authCheck
	for _, r := range k.Resources {
		for _, o := range decodeK8sFile(t, filepath.Join(base, r)) {
			if o.Kind != "Deployment" && o.Kind != "Job" {
				continue
			}
			spec := o.Spec.Template.Spec
			for _, c := range spec.Containers {
				where := fmt.Sprintf("%s %s container %s", o.Kind, o.Metadata.Name, c.Name)
				if name, _, _ := strings.Cut(c.Image, ":"); name != "troupe" {
					continue
				}
				if c.Command != nil && strings.Join(c.Command, " ") != strings.Join(img.entry, " ") {
					add(fmt.Sprintf("%s: command %q, the image's entrypoint is %q", where, c.Command, img.entry))
				}
				// The pod: the image, with its mounts over it.
				pod := *img
				pod.copies, pod.writable, pod.built = map[string]string{}, map[string]bool{}, map[string]bool{}
				for k, v := range img.copies {
					pod.copies[k] = v
				}
				for k, v := range img.built {
					pod.built[k] = v
				}
				vols := map[string]int{}
				for i, v := range spec.Volumes {
					vols[v.Name] = i
				}
				var secretMounts []string
				for _, m := range c.VolumeMounts {
					i, ok := vols[m.Name]
					if !ok {
						continue
					}
					v := spec.Volumes[i]
					mp := path.Clean(m.MountPath)
					if v.Secret != nil {
						secretMounts = append(secretMounts, mp)
					}
					delete(pod.copies, mp)
					switch {
					case v.ConfigMap != nil && cmDirs[v.ConfigMap.Name] != "":
						pod.copies[mp] = strings.TrimPrefix(cmDirs[v.ConfigMap.Name], repoRoot)
					case v.EmptyDir != nil:
						pod.built[mp], pod.writable[mp] = true, true
					}
				}
				env := map[string]string{}
				for k, v := range img.env {
					env[k] = v
				}
				for _, ef := range c.EnvFrom {
					if ef.ConfigMapRef != nil {
						for k, v := range literals[ef.ConfigMapRef.Name] {
							env[k] = v
						}
					}
				}
				own := map[string]string{}
				for _, e := range c.Env {
					own[e.Name] = e.Value
					env[e.Name] = e.Value
				}
				add(checkEnv(where, own, known)...)
				// Kubernetes expands $(VAR) in args from the container's env.
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					for name := range own {
						a = strings.ReplaceAll(a, "$("+name+")", "10.0.0.1")
					}
					args[i] = a
				}
				inv := invocation{where: where, args: args, env: env}
				p, pr := parseInvocation(t, inv, allEnv)
				add(pr...)
				if p == nil {
					continue
				}
				add(checkPaths(inv, p, &pod)...)
				auths = append(auths, authCheck{where, p, env, secretMounts})
				for what, pr := range map[string]*k8sProbe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
					if pr == nil || pr.Exec == nil || len(pr.Exec.Command) < 2 || pr.Exec.Command[0] != img.entry[0] {
						continue
					}
					hp, pr := parseInvocation(t, invocation{where: where + " " + what, args: pr.Exec.Command[1:], env: env}, allEnv)
					add(pr...)
					if _, port := httpPort(p); hp != nil && hp.cmd.Name() == "healthcheck" && !strings.Contains(hp.flags.Arg(0), "127.0.0.1:"+port+"/") {
						add(fmt.Sprintf("%s: %s GETs %s, but the container listens on port %s", where, what, hp.flags.Arg(0), port))
					}
				}
				switch strings.TrimPrefix(p.cmd.CommandPath(), "troupe ") {
				case "topics apply":
					if d, _ := p.value("register-schemas"); d != "" && o.Kind == "Job" {
						setup = true
					}
				case "run":
					runs++
					add(checkRunPod(where, p, c, spec)...)
				}
			}
		}
	}
	serverHasToken := false
	for _, a := range auths {
		if serves(a.p) != "" && (a.env["TROUPE_AUTH_TOKEN_FILE"] != "" || a.env["TROUPE_AUTH_TOKEN"] != "") {
			serverHasToken = true
		}
	}
	for _, a := range auths {
		hasFile := func(f string) bool {
			for _, m := range a.secrets {
				if strings.HasPrefix(f, m+"/") {
					return true
				}
			}
			return false
		}
		add(checkAuth(a.where, a.p, a.env, hasFile, serverHasToken)...)
	}
	if runs != 4 {
		add(fmt.Sprintf("%d troupe run containers in the base, want 4 (payment, inventory, shipping, the coordinator)", runs))
	}
	if !setup {
		add("no Job runs troupe topics apply --register-schemas (the topics and the schemas before the steps)")
	}

	// The Strimzi topics are the topology's, as the command prints them.
	topo, err := loadTopology(repoRoot + "topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := topology.StrimziTopics(topo.TopicSpecs(), "my-cluster", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "strimzi/kafkatopics.yaml")); err != nil || !bytes.Equal(got, gen) {
		add("deploy/k8s/strimzi/kafkatopics.yaml is not the topology's topics: regenerate it with 'troupe topics plan --format strimzi --strimzi-cluster my-cluster > deploy/k8s/strimzi/kafkatopics.yaml'")
	}
	return problems
}

// checkRunPod: a troupe run container serves its probes on its --http
// port, and its pod's grace outlasts the batch in flight.
func checkRunPod(where string, p *parsed, c k8sContainer, spec k8sPodSpec) []string {
	var problems []string
	host, port := httpPort(p)
	if host != "0.0.0.0" {
		problems = append(problems, fmt.Sprintf("%s: --http %s:%s: probes and Prometheus cannot reach it (use 0.0.0.0)", where, host, port))
	}
	named := map[string]string{}
	for _, cp := range c.Ports {
		named[cp.Name] = fmt.Sprint(cp.ContainerPort)
		named[fmt.Sprint(cp.ContainerPort)] = fmt.Sprint(cp.ContainerPort)
	}
	for what, pr := range map[string]*k8sProbe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue // deploy/k8s/validate requires them
		}
		if got := named[fmt.Sprint(pr.HTTPGet.Port)]; got != port {
			problems = append(problems, fmt.Sprintf("%s: %s on port %v (%s), but --http listens on %s", where, what, pr.HTTPGet.Port, got, port))
		}
	}
	// pkg/step's default commit interval is 100 ms; the transaction timeout
	// (10 s) bounds the interval plus the handler timeout.
	handler := 5 * time.Second
	if v, _ := p.value("handler-timeout"); v != "0s" && v != "" {
		handler, _ = time.ParseDuration(v)
	}
	need := max(handler+100*time.Millisecond, 10*time.Second)
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= need {
		problems = append(problems, fmt.Sprintf("%s: terminationGracePeriodSeconds must exceed %s (the commit interval plus --handler-timeout %s, within the 10 s transaction)", where, need, handler))
	}
	return problems
}

func TestKubernetes(t *testing.T) {
	for _, p := range checkKubernetes(t, k8sDir, readDockerfile(t)) {
		t.Error(p)
	}
}

// TestKubernetesCheckFails: each kind of mistake in the manifests is
// caught, naming what is wrong.
func TestKubernetesCheckFails(t *testing.T) {
	cases := []struct{ name, file, old, new, want string }{
		{"unknown flag", "base/payment.yaml", `"--step", "payment"`, `"--step", "payment", "--no-such-flag", "x"`, "unknown flag: --no-such-flag"},
		{"unknown command", "base/setup-job.yaml", `["topics", "apply",`, `["topic", "apply",`, `"topic"`},
		{"unknown step", "base/shipping.yaml", `"--step", "shipping"`, `"--step", "shiping"`, "--step shiping is not a step"},
		{"unknown env", "base/kustomization.yaml", "TROUPE_LOG_FORMAT=json", "TROUPE_LOGFORMAT=json", "TROUPE_LOGFORMAT is read by no troupe flag"},
		{"overlay env", "overlays/example/kustomization.yaml", "TROUPE_BROKERS=", "TROUPE_BROKER=", "TROUPE_BROKER is read by no troupe flag"},
		{"schemas not in image", "base/setup-job.yaml", `"/etc/troupe/schemas"`, `"/etc/troupe/schema"`, "--register-schemas /etc/troupe/schema is not in the image"},
		{"probe port", "base/inventory.yaml", `"--http", "0.0.0.0:8090"`, `"--http", "0.0.0.0:8091"`, "readinessProbe on port http (8090), but --http listens on 8091"},
		{"grace", "base/coordinator.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 5", "terminationGracePeriodSeconds must exceed"},
		{"state not writable", "base/payment.yaml", `"--state-dir", "/var/lib/troupe/state"`, `"--state-dir", "/srv/state"`, "--state-dir /srv/state is not under a directory"},
		{"topology copy", "base/topology/orders.yaml", "partitions: 8", "partitions: 4", "differs from topology/orders.yaml"},
		{"strimzi stale", "strimzi/kafkatopics.yaml", "partitions: 8", "partitions: 4", "regenerate it"},
		{"no token", "base/kustomization.yaml", "      - TROUPE_AUTH_TOKEN_FILE=/run/secrets/troupe/token\n", "", "serves the schema registry on 0.0.0.0 without a token"},
		{"token not mounted", "base/shipping.yaml", "            - {name: auth, mountPath: /run/secrets/troupe, readOnly: true}\n", "", "the token file /run/secrets/troupe/token is not mounted from a secret"},
		{"probe flag", "base/registry.yaml", `"healthcheck", "http://127.0.0.1:8081/"`, `"healthcheck", "--retries", "3", "http://127.0.0.1:8081/"`, "unknown flag: --retries"},
		{"exec probe port", "base/registry.yaml", `"http://127.0.0.1:8081/"`, `"http://127.0.0.1:8082/"`, "readinessProbe GETs http://127.0.0.1:8082/"},
		{"no setup", "base/setup-job.yaml", `"--register-schemas", "/etc/troupe/schemas"`, `"--register-schemas", ""`, "no Job runs troupe topics apply --register-schemas"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(k8sDir)); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, c.file)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), c.old) {
				t.Fatalf("%s no longer has %q: update this case", c.file, c.old)
			}
			if err := os.WriteFile(file, []byte(strings.Replace(string(data), c.old, c.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			problems := checkKubernetes(t, dir, readDockerfile(t))
			if !strings.Contains(strings.Join(problems, "\n"), c.want) {
				t.Errorf("the problems do not say %q:\n%s", c.want, strings.Join(problems, "\n"))
			}
		})
	}
}

// topics plan --format strimzi needs no broker and prints the checked-in
// example; an unknown format is bad usage.
func TestTopicsPlanStrimzi(t *testing.T) {
	out, code := runCLI(t, "topics", "plan", "--format", "strimzi", "--topology", topologyFile, "--brokers", "127.0.0.1:1")
	want, err := os.ReadFile(k8sDir + "strimzi/kafkatopics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code != exitOK || out != string(want) {
		t.Errorf("topics plan --format strimzi: exit %d, output differs from deploy/k8s/strimzi/kafkatopics.yaml:\n%s", code, out)
	}
	out, code = runCLI(t, "topics", "plan", "--format", "strimzi", "--topology", topologyFile, "--strimzi-cluster", "prod", "--namespace", "kafka")
	if code != exitOK || strings.Count(out, "strimzi.io/cluster: prod\n") != 19 || strings.Count(out, "namespace: kafka\n") != 19 {
		t.Errorf("--strimzi-cluster prod --namespace kafka: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "topics", "plan", "--format", "yaml", "--topology", topologyFile); code != exitUsage || !strings.Contains(out, `unknown --format "yaml" (use table or strimzi)`) {
		t.Errorf("--format yaml: exit %d, %q", code, out)
	}
}
