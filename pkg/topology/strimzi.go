package topology

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// StrimziAPIVersion is the KafkaTopic API version StrimziTopics writes by
// default: served by every Strimzi release with KRaft clusters; its spec
// is the same in kafka.strimzi.io/v1.
const StrimziAPIVersion = "kafka.strimzi.io/v1beta2"

// strimziTopic is a Strimzi KafkaTopic resource.
type strimziTopic struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Metadata   strimziMeta  `yaml:"metadata"`
	Spec       strimziTSpec `yaml:"spec"`
}

type strimziMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace,omitempty"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

type strimziTSpec struct {
	TopicName  string            `yaml:"topicName"`
	Partitions int32             `yaml:"partitions"`
	Replicas   int16             `yaml:"replicas"`
	Config     map[string]string `yaml:"config,omitempty"`
}

var k8sNameBad = regexp.MustCompile(`[^a-z0-9.-]+`)

// StrimziName is the Kubernetes resource name of a topic: lower case, with
// each run of characters a name cannot have ('_' of _schemas) made '-',
// trimmed to start and end with a letter or digit. The topic's own name is
// in spec.topicName.
func StrimziName(topic string) string {
	n := k8sNameBad.ReplaceAllString(strings.ToLower(topic), "-")
	return strings.Trim(n, "-.")
}

// StrimziTopics renders specs as Strimzi KafkaTopic resources, one YAML
// document each, for the Kafka cluster named cluster (the strimzi.io/cluster
// label the Topic Operator selects on) in namespace ("" to leave it to
// kubectl or kustomize). apiVersion "" is StrimziAPIVersion.
func StrimziTopics(specs []TopicSpec, cluster, namespace, apiVersion string) ([]byte, error) {
	if cluster == "" {
		return nil, fmt.Errorf("no Strimzi cluster name: give the name of the Kafka resource the topics belong to")
	}
	if apiVersion == "" {
		apiVersion = StrimziAPIVersion
	}
	var buf bytes.Buffer
	names := map[string]string{}
	for i, s := range specs {
		name := StrimziName(s.Name)
		if name == "" || len(name) > 253 {
			return nil, fmt.Errorf("topic %q has no valid Kubernetes name (%q): rename it", s.Name, name)
		}
		if other, ok := names[name]; ok {
			return nil, fmt.Errorf("topics %q and %q both make the Kubernetes name %q: rename one", other, s.Name, name)
		}
		names[name] = s.Name
		doc := strimziTopic{
			APIVersion: apiVersion,
			Kind:       "KafkaTopic",
			Metadata: strimziMeta{
				Name:        name,
				Namespace:   namespace,
				Labels:      map[string]string{"strimzi.io/cluster": cluster},
				Annotations: map[string]string{"troupe/purpose": s.Purpose},
			},
			Spec: strimziTSpec{TopicName: s.Name, Partitions: s.Partitions, Replicas: s.Replication, Config: s.Configs},
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
