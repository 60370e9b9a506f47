package kafka_test

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/kafka"
)

// The embedded broker answers as Apache Kafka does where Kafka's own Java
// client depends on it (the patches in internal/kfake/PATCHES.md). Each
// check below failed on kfake as released: kafka-topics --describe,
// GetOffsetShell and kafka-consumer-groups --reset-offsets died on a null
// EligibleLeaderReplicas, AdminClient.createTopics on null Configs,
// kafka-consumer-groups --list printed nothing, and --describe of a
// KIP-848 group sent a topic named "".

func embeddedClient(t *testing.T, opts ...kgo.Opt) (*kafka.Embedded, *kgo.Client) {
	t.Helper()
	e, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Partitions: 2, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.Addr())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return e, cl
}

func TestEmbeddedCreateTopicsConfigsNotNull(t *testing.T) {
	_, cl := embeddedClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.Version = 7 // as Kafka 4.3's AdminClient sends
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "created", 3, 1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("CreateTopics: %+v", resp.Topics)
	}
	// A null array decodes as nil; Java's AdminClient streams it and NPEs.
	if resp.Topics[0].Configs == nil {
		t.Error("CreateTopics v7 response: Configs is null; Kafka sends the topic's configs (AdminClient.createTopics fails with `\"configs\" is null`)")
	}
}

func TestEmbeddedDescribeTopicPartitionsELRNotNull(t *testing.T) {
	e, cl := embeddedClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Cluster().CreateTopic("described", 2, nil); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrDescribeTopicPartitionsRequest()
	rt := kmsg.NewDescribeTopicPartitionsRequestTopic()
	rt.Topic = "described"
	req.Topics = append(req.Topics, rt)
	req.ResponsePartitionLimit = 2000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 {
		t.Fatalf("DescribeTopicPartitions: %+v", resp.Topics)
	}
	for _, p := range resp.Topics[0].Partitions {
		if p.EligibleLeaderReplicas == nil || p.LastKnownELR == nil {
			t.Errorf("partition %d: EligibleLeaderReplicas %v, LastKnownELR %v: null; Kafka sends empty lists (kafka-topics --describe NPEs on null)", p.Partition, p.EligibleLeaderReplicas, p.LastKnownELR)
		}
	}
}

// consumeInGroup joins group with the classic or the KIP-848 protocol and
// waits until it owns partitions of topic.
func consumeInGroup(t *testing.T, addr, group, topic string, kip848 bool) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic)}
	if kip848 {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		if fs := cl.PollRecords(ctx, 10); fs.NumRecords() > 0 {
			return
		}
	}
	t.Fatalf("group %s did not consume %s within 60 s", group, topic)
}

func TestEmbeddedListGroupsTypesFilterAsJavaSendsIt(t *testing.T) {
	e, cl := embeddedClient(t)
	if err := e.Cluster().CreateTopic("listed", 2, nil); err != nil {
		t.Fatal(err)
	}
	consumeInGroup(t, e.Addr(), "g-classic", "listed", false)
	consumeInGroup(t, e.Addr(), "g-848", "listed", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// kafka-consumer-groups --list sends the types as GroupType.toString
	// gives them, capitalized; Kafka's coordinator matches them ignoring
	// case, and the states too.
	for _, c := range []struct {
		types, states []string
		want          string
	}{
		{[]string{"Classic", "Consumer"}, nil, "g-848 g-classic"},
		{[]string{"Consumer"}, nil, "g-848"},
		{[]string{"classic"}, nil, "g-classic"},
		{nil, []string{"STABLE"}, "g-848 g-classic"},
		{[]string{"Share"}, nil, ""},
	} {
		req := kmsg.NewPtrListGroupsRequest()
		req.TypesFilter, req.StatesFilter = c.types, c.states
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, g := range resp.Groups {
			got = append(got, g.Group)
		}
		slices.Sort(got)
		if strings.Join(got, " ") != c.want {
			t.Errorf("ListGroups types %q states %q: %q, want %q", c.types, c.states, got, c.want)
		}
	}
}

func TestEmbeddedConsumerGroupDescribeNamesTopics(t *testing.T) {
	e, cl := embeddedClient(t)
	if err := e.Cluster().CreateTopic("assigned", 2, nil); err != nil {
		t.Fatal(err)
	}
	consumeInGroup(t, e.Addr(), "g-848", "assigned", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Groups = []string{"g-848"}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Groups) != 1 || resp.Groups[0].ErrorCode != 0 || len(resp.Groups[0].Members) != 1 {
		t.Fatalf("ConsumerGroupDescribe: %+v", resp.Groups)
	}
	m := resp.Groups[0].Members[0]
	for what, a := range map[string]kmsg.Assignment{"Assignment": m.Assignment, "TargetAssignment": m.TargetAssignment} {
		if len(a.TopicPartitions) != 1 {
			t.Errorf("%s: %+v, want topic assigned", what, a.TopicPartitions)
			continue
		}
		if tp := a.TopicPartitions[0]; tp.Topic != "assigned" || len(tp.Partitions) != 2 {
			t.Errorf("%s: topic %q partitions %v, want \"assigned\" [0 1] (Kafka names the topic beside its ID; the Java admin asks offsets of topic \"\")", what, tp.Topic, tp.Partitions)
		}
	}
}

// TestDockerfileCopiesReplacedModules: go.mod replaces kfake with the
// copy in internal/kfake; the image's `go mod download`, run before the
// sources are copied in, reads that copy's go.mod, so the Dockerfile must
// copy every local replacement's go.mod before it.
func TestDockerfileCopiesReplacedModules(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	docker, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(docker)
	download := strings.Index(d, "RUN go mod download")
	if download < 0 {
		t.Fatal("deploy/Dockerfile has no RUN go mod download")
	}
	repl := regexp.MustCompile(`(?m)^replace \S+ => \./(\S+)$`).FindAllStringSubmatch(string(gomod), -1)
	if len(repl) == 0 {
		t.Fatal("go.mod replaces nothing with a local copy; this test expects the kfake copy")
	}
	for _, m := range repl {
		dir := strings.TrimSuffix(m[1], "/")
		line := regexp.MustCompile(`(?m)^COPY .*\b` + regexp.QuoteMeta(dir+"/go.mod") + `\b.*$`).FindStringIndex(d)
		if line == nil || line[0] > download {
			t.Errorf("deploy/Dockerfile: no COPY of %s/go.mod before RUN go mod download", dir)
		}
	}
}
