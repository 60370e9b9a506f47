package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/integration/kafkaharness"
	"github.com/troupehq/troupe/pkg/kafka"
)

// On a three-node cluster, a topic just created is not yet known to every
// broker (issue 13: a step started right after `troupe topics apply` exited
// with "input topic ... does not exist"). kafka.AwaitTopics, which the steps
// and the registry wait with, returns only once every broker lists it. The
// test counts how often a broker asked right after the creation did not
// know the topic yet: the race the wait covers.
func TestAwaitTopicsOnThreeBrokers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster; run without -short")
	}
	c := kafkaharness.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := newClient(t, c.Addrs())
	adm := kadm.NewClient(cl)
	const topics = 20
	unseen := 0
	for i := range topics {
		topic := fmt.Sprintf("visible-%d-%02d", time.Now().UnixNano(), i)
		if _, err := adm.CreateTopic(ctx, 8, 3, nil, topic); err != nil {
			t.Fatal(err)
		}
		// Right after the creation: which brokers know it?
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		for _, b := range cl.DiscoveredBrokers() {
			resp, err := b.Request(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if mt := resp.(*kmsg.MetadataResponse).Topics; len(mt) != 1 || mt[0].ErrorCode != 0 || len(mt[0].Partitions) != 8 {
				unseen++
			}
		}
		got, err := kafka.AwaitTopics(ctx, cl, []string{topic}, kafka.TopicWait{Max: 30 * time.Second, Log: zerolog.New(t.Output())})
		if err != nil {
			t.Fatalf("AwaitTopics(%s): %v", topic, err)
		}
		if n := len(got[topic].Partitions); n != 8 {
			t.Fatalf("%s: %d partitions once visible, want 8", topic, n)
		}
		// Once AwaitTopics returned, every broker knows it.
		for _, b := range cl.DiscoveredBrokers() {
			resp, err := b.Request(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if mt := resp.(*kmsg.MetadataResponse).Topics; len(mt) != 1 || mt[0].ErrorCode != 0 || len(mt[0].Partitions) != 8 {
				t.Fatalf("%s: a broker does not list it after AwaitTopics returned: %+v", topic, mt)
			}
		}
	}
	t.Logf("right after creating %d topics, a broker did not know the topic %d times of %d asked", topics, unseen, topics*3)

	// A topic that is never created: the wait ends with the topics named.
	_, err := kafka.AwaitTopics(ctx, cl, []string{"never-created"}, kafka.TopicWait{Max: time.Second})
	if me := (*kafka.MissingTopicsError)(nil); !errors.As(err, &me) || len(me.Topics) != 1 || me.Topics[0] != "never-created" {
		t.Fatalf("AwaitTopics of a missing topic: %v", err)
	}
}
