package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

const k8sDir = ".."

// TestManifests: the base and the example overlay decode strictly into the
// upstream types and hang together; so does the Strimzi topics file.
func TestManifests(t *testing.T) {
	for _, dir := range []string{"base", "overlays/example"} {
		t.Run(dir, func(t *testing.T) {
			b := Resolve(filepath.Join(k8sDir, dir))
			for _, p := range b.Check() {
				t.Error(p)
			}
			kinds := map[string]int{}
			for _, o := range b.Objects {
				kinds[o.Kind]++
			}
			// registry, 3 steps, coordinator; their PDBs; the set-up Job;
			// the registry's and the coordinator's Services.
			if kinds["Deployment"] != 5 || kinds["PodDisruptionBudget"] != 5 || kinds["Job"] != 1 || kinds["Service"] != 2 {
				t.Errorf("objects by kind: %v", kinds)
			}
			if _, ok := b.ConfigMaps["troupe-topology"]["orders.yaml"]; !ok {
				t.Error("no troupe-topology ConfigMap with orders.yaml")
			}
		})
	}
	b := Resolve(filepath.Join(k8sDir, "overlays/example"))
	if b.Namespace != "troupe" {
		t.Errorf("overlay namespace %q", b.Namespace)
	}
	if d := b.find("Deployment", "troupe-payment"); d == nil || *d.Obj.(*appsv1.Deployment).Spec.Replicas != 4 {
		t.Error("the overlay's replicas for troupe-payment are not applied")
	}
	if got := b.ConfigMaps["troupe-env"]["TROUPE_BROKERS"]; got != "my-cluster-kafka-bootstrap.kafka:9092" {
		t.Errorf("overlay TROUPE_BROKERS = %q", got)
	}
	objs, problems := DecodeFile(filepath.Join(k8sDir, "strimzi/kafkatopics.yaml"))
	for _, p := range problems {
		t.Error(p)
	}
	if len(objs) != 19 {
		t.Errorf("%d KafkaTopics in strimzi/kafkatopics.yaml, want 19", len(objs))
	}
}

// copyTree copies deploy/k8s (its YAML) to a temporary directory.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(k8sDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(k8sDir, p)
		if info.IsDir() {
			if rel == "validate" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestManifestsCheckFails: each kind of mistake is caught, naming it.
func TestManifestsCheckFails(t *testing.T) {
	cases := []struct{ name, file, old, new, want string }{
		{"unknown field", "base/payment.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriod: 30", `unknown field "terminationGracePeriod"`},
		{"bad quantity", "base/shipping.yaml", "memory: 256Mi", "memory: 256MiB", "quantities must match"},
		{"selector", "base/inventory.yaml", "  template:\n    metadata:\n      labels: {app.kubernetes.io/name: troupe, app.kubernetes.io/component: inventory}", "  template:\n    metadata:\n      labels: {app.kubernetes.io/name: troupe, app.kubernetes.io/component: inventry}", "does not select its own pods"},
		{"readiness path", "base/payment.yaml", "path: /readyz", "path: /ready", "needs readinessProbe httpGet /readyz"},
		{"probe port", "base/coordinator.yaml", "httpGet: {path: /healthz, port: http}", "httpGet: {path: /healthz, port: web}", "probe on port web"},
		{"state on PVC", "base/shipping.yaml", "emptyDir: {sizeLimit: 2Gi}", "hostPath: {path: /tmp}", "is not on an emptyDir volume"},
		{"missing resource file", "base/kustomization.yaml", "  - shipping.yaml\n", "  - shiping.yaml\n", "resource shiping.yaml"},
		{"no PDB", "base/shipping.yaml", "name: troupe-shipping\nspec:\n  maxUnavailable: 1", "name: troupe-shipping\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels: {app.kubernetes.io/component: none}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x", "Deployment troupe-shipping has no PodDisruptionBudget"},
		{"service port", "base/coordinator.yaml", "port: 8080, targetPort: http}", "port: 8080, targetPort: api}", "targetPort api is no port"},
		{"configmap name", "base/setup-job.yaml", "configMapRef: {name: troupe-env}", "configMapRef: {name: troupe-envs}", "no ConfigMap troupe-envs"},
		{"patch target", "overlays/example/payment-resources.yaml", "name: troupe-payment", "name: troupe-paymnt", "targets Deployment troupe-paymnt"},
		{"replicas target", "overlays/example/kustomization.yaml", "- name: troupe-shipping\n    count: 2", "- name: troupe-shiping\n    count: 2", "replicas for troupe-shiping"},
		{"kustomization typo", "overlays/example/kustomization.yaml", "configMapGenerator:", "configMapGenerater:", `unknown field "configMapGenerater"`},
		{"unknown kind", "base/registry.yaml", "kind: Service", "kind: Servce", `"Servce" is not a kind`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyTree(t)
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
			var all []string
			for _, d := range []string{"base", "overlays/example"} {
				all = append(all, Resolve(filepath.Join(dir, d)).Check()...)
			}
			if !strings.Contains(strings.Join(all, "\n"), c.want) {
				t.Errorf("the problems do not say %q:\n%s", c.want, strings.Join(all, "\n"))
			}
		})
	}
}
