package topology

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dns1123Subdomain is Kubernetes' rule for a resource name.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// decodeStrimzi reads every KafkaTopic document, refusing unknown fields.
func decodeStrimzi(t *testing.T, out []byte) []strimziTopic {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	var docs []strimziTopic
	for {
		var d strimziTopic
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("document %d: %v\n%s", len(docs), err, out)
		}
		docs = append(docs, d)
	}
}

func TestStrimziTopicsMatchTheTopology(t *testing.T) {
	topo, err := Load("../../topology/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	specs := topo.TopicSpecs()
	out, err := StrimziTopics(specs, "prod-kafka", "troupe", "")
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeStrimzi(t, out)
	if len(docs) != len(specs) || len(specs) != 19 {
		t.Fatalf("%d KafkaTopic documents for %d topics, want 19 (5 business, 3 per step, changelog, retry, dlq and ended of the coordinator, _schemas)", len(docs), len(specs))
	}
	names := map[string]bool{}
	for i, s := range specs {
		d := docs[i]
		if d.APIVersion != StrimziAPIVersion || d.Kind != "KafkaTopic" {
			t.Errorf("%s: %s %s, want %s KafkaTopic", s.Name, d.APIVersion, d.Kind, StrimziAPIVersion)
		}
		if d.Spec.TopicName != s.Name || d.Spec.Partitions != s.Partitions || d.Spec.Replicas != s.Replication {
			t.Errorf("%s: topicName %s, %d partitions, %d replicas; the topology wants %s, %d, %d",
				s.Name, d.Spec.TopicName, d.Spec.Partitions, d.Spec.Replicas, s.Name, s.Partitions, s.Replication)
		}
		if len(d.Spec.Config) != len(s.Configs) {
			t.Errorf("%s: config %v, want %v", s.Name, d.Spec.Config, s.Configs)
		}
		for k, v := range s.Configs {
			if d.Spec.Config[k] != v {
				t.Errorf("%s: config %s=%q, want %q", s.Name, k, d.Spec.Config[k], v)
			}
		}
		if !dns1123Subdomain.MatchString(d.Metadata.Name) || names[d.Metadata.Name] {
			t.Errorf("%s: resource name %q is not a valid, unique Kubernetes name", s.Name, d.Metadata.Name)
		}
		names[d.Metadata.Name] = true
		if d.Metadata.Labels["strimzi.io/cluster"] != "prod-kafka" || d.Metadata.Namespace != "troupe" {
			t.Errorf("%s: labels %v, namespace %q", s.Name, d.Metadata.Labels, d.Metadata.Namespace)
		}
		if d.Metadata.Annotations["troupe/purpose"] != s.Purpose {
			t.Errorf("%s: purpose %q, want %q", s.Name, d.Metadata.Annotations["troupe/purpose"], s.Purpose)
		}
	}
	// Spot checks against the topology itself, not only TopicSpecs.
	byTopic := map[string]strimziTopic{}
	for _, d := range docs {
		byTopic[d.Spec.TopicName] = d
	}
	if d := byTopic[topo.Changelog("payment")]; d.Spec.Config["cleanup.policy"] != "compact" || d.Spec.Partitions != int32(topo.Partitions) {
		t.Errorf("payment's changelog: %+v, want compacted with %d partitions", d.Spec, topo.Partitions)
	}
	if d := byTopic[topo.DLQ("shipping")]; d.Spec.Config["retention.ms"] != DLQRetention {
		t.Errorf("shipping's DLQ: %+v, want retention.ms %s", d.Spec, DLQRetention)
	}
	if d := byTopic[SchemasTopic]; d.Metadata.Name != "schemas" || d.Spec.Partitions != 1 {
		t.Errorf("_schemas: resource %q, %d partitions; want schemas, 1", d.Metadata.Name, d.Spec.Partitions)
	}
	for _, tp := range topo.Topics {
		if _, ok := byTopic[tp.Name]; !ok {
			t.Errorf("business topic %s has no KafkaTopic", tp.Name)
		}
	}
}

func TestStrimziTopicsRefuses(t *testing.T) {
	specs := []TopicSpec{{Name: "a_b", Partitions: 1, Replication: 1}, {Name: "a-b", Partitions: 1, Replication: 1}}
	if _, err := StrimziTopics(specs, "c", "", ""); err == nil || !strings.Contains(err.Error(), `"a_b" and "a-b"`) {
		t.Errorf("two topics with one resource name: %v", err)
	}
	if _, err := StrimziTopics(specs[:1], "", "", ""); err == nil {
		t.Error("no cluster name: no error")
	}
	if _, err := StrimziTopics([]TopicSpec{{Name: "__", Partitions: 1, Replication: 1}}, "c", "", ""); err == nil {
		t.Error("a topic with no valid resource name: no error")
	}
	out, err := StrimziTopics(specs[:1], "c", "", "kafka.strimzi.io/v1")
	if err != nil || !strings.HasPrefix(string(out), "apiVersion: kafka.strimzi.io/v1\n") {
		t.Errorf("apiVersion v1: %v\n%s", err, out)
	}
}
