package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Kustomization is the part of kustomize's Kustomization that troupe's
// manifests use; a field outside it is an error (a typo, or a feature this
// checker does not resolve).
type Kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources          []string `json:"resources,omitempty"`
	ConfigMapGenerator []struct {
		Name     string   `json:"name"`
		Behavior string   `json:"behavior,omitempty"`
		Literals []string `json:"literals,omitempty"`
		Files    []string `json:"files,omitempty"`
	} `json:"configMapGenerator,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Replicas []struct {
		Name  string `json:"name"`
		Count int32  `json:"count"`
	} `json:"replicas,omitempty"`
	Patches []struct {
		Path   string `json:"path"`
		Target *struct {
			Kind string `json:"kind,omitempty"`
			Name string `json:"name,omitempty"`
		} `json:"target,omitempty"`
	} `json:"patches,omitempty"`
}

// KafkaTopic is Strimzi's KafkaTopic, as `troupe topics plan --format
// strimzi` writes it.
type KafkaTopic struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		TopicName  string            `json:"topicName"`
		Partitions int32             `json:"partitions"`
		Replicas   int32             `json:"replicas"`
		Config     map[string]string `json:"config,omitempty"`
	} `json:"spec"`
}

// Object is one decoded manifest document.
type Object struct {
	File string
	Kind string
	Name string
	Obj  any // *appsv1.Deployment, *corev1.Service, ...
}

// Build is a kustomization resolved the way this checker can: its
// resources (recursively), generated ConfigMaps, images and replicas
// applied; patches are decoded and their targets checked, not merged.
type Build struct {
	Dir        string
	Namespace  string
	Objects    []*Object
	ConfigMaps map[string]map[string]string // generated: name -> literals and file keys
	Problems   []string
}

func (b *Build) addf(format string, args ...any) {
	b.Problems = append(b.Problems, fmt.Sprintf(format, args...))
}

// newObject is the typed object an apiVersion and kind decode into.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1 Job":
		return &batchv1.Job{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Namespace":
		return &corev1.Namespace{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "kafka.strimzi.io/v1beta2 KafkaTopic", "kafka.strimzi.io/v1 KafkaTopic":
		return &KafkaTopic{}, true
	}
	return nil, false
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// DecodeFile decodes every document of a manifest file strictly into its
// upstream type.
func DecodeFile(file string) ([]*Object, []string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var objs []*Object
	var problems []string
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			problems = append(problems, fmt.Sprintf("%s: document %d: %v", file, i+1, err))
			continue
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: document %d: %s %q is not a kind these manifests may use", file, i+1, tm.APIVersion, tm.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s: %v", file, tm.Kind, err))
			continue
		}
		name := objectMeta(obj).Name
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			problems = append(problems, fmt.Sprintf("%s: %s name %q: %s", file, tm.Kind, name, msg))
		}
		for k, v := range objectMeta(obj).Labels {
			problems = append(problems, labelProblems(file, k, v)...)
		}
		objs = append(objs, &Object{File: file, Kind: tm.Kind, Name: name, Obj: obj})
	}
	return objs, problems
}

func stripComments(doc string) string {
	var out []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func labelProblems(where, k, v string) []string {
	var out []string
	for _, msg := range validation.IsQualifiedName(k) {
		out = append(out, fmt.Sprintf("%s: label key %q: %s", where, k, msg))
	}
	for _, msg := range validation.IsValidLabelValue(v) {
		out = append(out, fmt.Sprintf("%s: label %s value %q: %s", where, k, v, msg))
	}
	return out
}

func objectMeta(obj any) *metav1.ObjectMeta {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.ObjectMeta
	case *batchv1.Job:
		return &o.ObjectMeta
	case *corev1.Service:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &o.ObjectMeta
	case *KafkaTopic:
		return &o.Metadata
	}
	panic(fmt.Sprintf("no metadata for %T", obj))
}

// Resolve reads the kustomization in dir and everything it names.
func Resolve(dir string) *Build {
	b := &Build{Dir: dir, ConfigMaps: map[string]map[string]string{}}
	b.resolve(dir)
	return b
}

func (b *Build) resolve(dir string) {
	file := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		b.addf("%s: %v", dir, err)
		return
	}
	var k Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		b.addf("%s: %v", file, err)
		return
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		b.addf("%s: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", file, k.APIVersion, k.Kind)
	}
	if k.Namespace != "" {
		b.Namespace = k.Namespace
	}
	for _, l := range k.Labels {
		for key, v := range l.Pairs {
			b.Problems = append(b.Problems, labelProblems(file, key, v)...)
		}
	}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		switch {
		case err != nil:
			b.addf("%s: resource %s: %v", file, r, err)
		case st.IsDir():
			b.resolve(p)
		default:
			objs, problems := DecodeFile(p)
			b.Objects = append(b.Objects, objs...)
			b.Problems = append(b.Problems, problems...)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		data, exists := b.ConfigMaps[g.Name]
		switch g.Behavior {
		case "", "create":
			if exists {
				b.addf("%s: configMapGenerator %s exists already (use behavior: merge)", file, g.Name)
			}
			data = map[string]string{}
		case "merge", "replace":
			if !exists {
				b.addf("%s: configMapGenerator %s has behavior %s, but no base generates it", file, g.Name, g.Behavior)
				data = map[string]string{}
			}
			if g.Behavior == "replace" {
				data = map[string]string{}
			}
		default:
			b.addf("%s: configMapGenerator %s: unknown behavior %q", file, g.Name, g.Behavior)
		}
		for _, l := range g.Literals {
			key, v, ok := strings.Cut(l, "=")
			if !ok || key == "" {
				b.addf("%s: configMapGenerator %s: literal %q is not KEY=VALUE", file, g.Name, l)
			}
			data[key] = v
		}
		for _, f := range g.Files {
			content, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				b.addf("%s: configMapGenerator %s: %v", file, g.Name, err)
			}
			data[filepath.Base(f)] = string(content)
		}
		b.ConfigMaps[g.Name] = data
	}
	for _, r := range k.Replicas {
		d := b.find("Deployment", r.Name)
		if d == nil {
			b.addf("%s: replicas for %s: no such Deployment", file, r.Name)
			continue
		}
		n := r.Count
		d.Obj.(*appsv1.Deployment).Spec.Replicas = &n
	}
	for _, im := range k.Images {
		used := false
		for _, c := range b.containers() {
			name, _, _ := strings.Cut(c.Image, ":")
			if name == im.Name {
				used = true
				c.Image = im.NewName + ":" + im.NewTag
				if im.NewName == "" {
					c.Image = name + ":" + im.NewTag
				}
			}
		}
		if !used {
			b.addf("%s: images: no container uses the image %s", file, im.Name)
		}
	}
	for _, p := range k.Patches {
		objs, problems := DecodeFile(filepath.Join(dir, p.Path))
		b.Problems = append(b.Problems, problems...)
		for _, o := range objs {
			kind, name := o.Kind, o.Name
			if p.Target != nil {
				kind, name = p.Target.Kind, p.Target.Name
			}
			if b.find(kind, name) == nil {
				b.addf("%s: patch %s targets %s %s, which no resource is", file, p.Path, kind, name)
			}
		}
	}
}

func (b *Build) find(kind, name string) *Object {
	for _, o := range b.Objects {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	return nil
}

// podSpecs are the pod templates of the Deployments and Jobs.
func (b *Build) podSpecs() map[*Object]*corev1.PodTemplateSpec {
	out := map[*Object]*corev1.PodTemplateSpec{}
	for _, o := range b.Objects {
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			out[o] = &x.Spec.Template
		case *batchv1.Job:
			out[o] = &x.Spec.Template
		}
	}
	return out
}

func (b *Build) containers() []*corev1.Container {
	var out []*corev1.Container
	for _, o := range b.Objects {
		var spec *corev1.PodSpec
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			spec = &x.Spec.Template.Spec
		case *batchv1.Job:
			spec = &x.Spec.Template.Spec
		default:
			continue
		}
		for i := range spec.Containers {
			out = append(out, &spec.Containers[i])
		}
	}
	return out
}

// Check is every problem of the build: the resolution's and the objects'
// consistency with one another and with what troupe's processes need.
func (b *Build) Check() []string {
	problems := append([]string(nil), b.Problems...)
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	configMaps := map[string]bool{}
	for name := range b.ConfigMaps {
		configMaps[name] = true
	}
	for _, o := range b.Objects {
		if o.Kind == "ConfigMap" {
			configMaps[o.Name] = true
		}
	}
	pods := b.podSpecs()
	var deployments []*Object
	for o, tpl := range pods {
		where := fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.File)
		if d, ok := o.Obj.(*appsv1.Deployment); ok {
			deployments = append(deployments, o)
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(tpl.Labels)) {
				add("%s: the selector %v does not select its own pods (labels %v)", where, d.Spec.Selector, tpl.Labels)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 1 {
				add("%s: no replicas", where)
			}
		}
		if j, ok := o.Obj.(*batchv1.Job); ok {
			if p := tpl.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
				add("%s: a Job's restartPolicy must be OnFailure or Never, not %q", where, p)
			}
			if j.Spec.BackoffLimit == nil {
				add("%s: no backoffLimit", where)
			}
		}
		if tpl.Spec.SecurityContext == nil || tpl.Spec.SecurityContext.RunAsNonRoot == nil || !*tpl.Spec.SecurityContext.RunAsNonRoot {
			add("%s: the pod must set runAsNonRoot (the image runs as 65532)", where)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range tpl.Spec.Volumes {
			volumes[v.Name] = v
			if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
				add("%s: volume %s: no ConfigMap %s", where, v.Name, v.ConfigMap.Name)
			}
		}
		for _, c := range tpl.Spec.Containers {
			cw := fmt.Sprintf("%s container %s", where, c.Name)
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && !configMaps[ef.ConfigMapRef.Name] {
					add("%s: envFrom: no ConfigMap %s", cw, ef.ConfigMapRef.Name)
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				add("%s: set resources: cpu and memory requests, a memory limit", cw)
			}
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					add("%s: mounts volume %s, which the pod does not have", cw, m.Name)
				}
			}
			checkProbe := func(what string, p *corev1.Probe) {
				if p == nil {
					if o.Kind == "Deployment" {
						add("%s: no %s probe", cw, what)
					}
					return
				}
				var port string
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port.String()
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port.String()
				}
				if _, ok := ports[port]; !ok && port != "" {
					if _, isNum := portNumber(port, ports); !isNum {
						add("%s: %s probe on port %s, which the container does not name", cw, what, port)
					}
				}
			}
			checkProbe("readiness", c.ReadinessProbe)
			checkProbe("liveness", c.LivenessProbe)
			// troupe run: /readyz (restoring, joining) and /healthz; state
			// on an emptyDir; a grace period set.
			if len(c.Args) > 0 && c.Args[0] == "run" {
				if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
					add("%s: troupe run needs readinessProbe httpGet /readyz (503 while it restores state)", cw)
				}
				if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
					add("%s: troupe run needs livenessProbe httpGet /healthz", cw)
				}
				if tpl.Spec.TerminationGracePeriodSeconds == nil {
					add("%s: set terminationGracePeriodSeconds", where)
				}
				state := ""
				for i, a := range c.Args {
					if a == "--state-dir" && i+1 < len(c.Args) {
						state = c.Args[i+1]
					}
				}
				onEmptyDir := false
				for _, m := range c.VolumeMounts {
					if state == m.MountPath || strings.HasPrefix(state, m.MountPath+"/") {
						onEmptyDir = volumes[m.Name].EmptyDir != nil
					}
				}
				if !onEmptyDir {
					add("%s: --state-dir %q is not on an emptyDir volume", cw, state)
				}
			}
		}
	}
	sort.Slice(deployments, func(i, j int) bool { return deployments[i].Name < deployments[j].Name })
	for _, o := range b.Objects {
		switch x := o.Obj.(type) {
		case *policyv1.PodDisruptionBudget:
			if x.Spec.MaxUnavailable == nil && x.Spec.MinAvailable == nil {
				add("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", o.Name)
			}
			if selects(x.Spec.Selector, deployments) == nil {
				add("PodDisruptionBudget %s: selects no Deployment's pods", o.Name)
			}
		case *corev1.Service:
			d := selects(&metav1.LabelSelector{MatchLabels: x.Spec.Selector}, deployments)
			if d == nil {
				add("Service %s: selects no Deployment's pods", o.Name)
				continue
			}
			for _, p := range x.Spec.Ports {
				if !namesPort(d.Obj.(*appsv1.Deployment), p.TargetPort.String()) {
					add("Service %s: targetPort %s is no port of %s", o.Name, p.TargetPort.String(), d.Name)
				}
			}
		}
	}
	for _, d := range deployments {
		found := false
		for _, o := range b.Objects {
			if pdb, ok := o.Obj.(*policyv1.PodDisruptionBudget); ok && selects(pdb.Spec.Selector, []*Object{d}) != nil {
				found = true
			}
		}
		if !found {
			add("Deployment %s has no PodDisruptionBudget", d.Name)
		}
	}
	sort.Strings(problems)
	return problems
}

func portNumber(port string, ports map[string]int32) (int32, bool) {
	var n int32
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil {
		return 0, false
	}
	for _, p := range ports {
		if p == n {
			return n, true
		}
	}
	return n, false
}

// selects is the first Deployment whose pods sel selects.
func selects(sel *metav1.LabelSelector, deployments []*Object) *Object {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return nil
	}
	for _, o := range deployments {
		if s.Matches(labels.Set(o.Obj.(*appsv1.Deployment).Spec.Template.Labels)) {
			return o
		}
	}
	return nil
}

func namesPort(d *appsv1.Deployment, port string) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
				return true
			}
		}
	}
	return false
}
