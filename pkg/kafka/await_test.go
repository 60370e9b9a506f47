package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/troupehq/troupe/pkg/kafka"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lagging is a three-broker kfake whose broker 1 does not list topic "t"
// while lag is set, as a broker that has not caught up with the
// controller's metadata log yet.
func lagging(t *testing.T) (*kgo.Client, *atomic.Bool) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(4, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var brokers []kmsg.MetadataResponseBroker
	for i, addr := range c.ListenAddrs() {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = int32(i), host, int32(p)
		brokers = append(brokers, b)
	}
	lag := &atomic.Bool{}
	lag.Store(true)
	c.ControlKey(kmsg.Metadata.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.MetadataRequest)
		if !lag.Load() || c.CurrentNode() != 1 || len(req.Topics) == 0 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.SetVersion(req.GetVersion())
		resp.Brokers, resp.ControllerID = brokers, 0
		for _, rt := range req.Topics {
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.ErrorCode = rt.Topic, kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, mt)
		}
		return resp, nil, true
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, lag
}

// A topic that one broker does not list yet is waited for, with a log line
// naming it, until that broker lists it.
func TestAwaitTopicsWaitsForEveryBroker(t *testing.T) {
	cl, lag := lagging(t)
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		got, err := kafka.AwaitTopics(t.Context(), cl, []string{"t"}, kafka.TopicWait{Max: 30 * time.Second, Every: time.Millisecond, Log: zerolog.New(logs)})
		if err == nil && len(got["t"].Partitions) != 4 {
			err = errors.New("t returned without its 4 partitions")
		}
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `"missing":["t"]`); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line naming the topic not yet on broker 1:\n%s", logs)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("AwaitTopics returned while broker 1 did not list the topic: %v", err)
	default:
	}
	lag.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitTopics still waiting 10 s after every broker listed the topic")
	}
}

// After the wait, a topic that some broker lists exists ("not yet"
// everywhere): it is returned, with a warning naming the lagging broker. A
// topic no broker lists is missing.
func TestAwaitTopicsAfterTheWait(t *testing.T) {
	cl, _ := lagging(t)
	logs := &syncBuffer{}
	got, err := kafka.AwaitTopics(context.Background(), cl, []string{"t"}, kafka.TopicWait{Max: 200 * time.Millisecond, Log: zerolog.New(logs)})
	if err != nil || len(got["t"].Partitions) != 4 {
		t.Fatalf("a topic broker 1 does not list: %v, %v; want it returned", got, err)
	}
	if !strings.Contains(logs.String(), `"unaware_brokers":{"t":[1]}`) {
		t.Errorf("no warning naming broker 1:\n%s", logs)
	}

	start := time.Now()
	_, err = kafka.AwaitTopics(context.Background(), cl, []string{"t", "nope"}, kafka.TopicWait{Max: 200 * time.Millisecond})
	var me *kafka.MissingTopicsError
	if !errors.As(err, &me) || len(me.Topics) != 1 || me.Topics[0] != "nope" || !strings.Contains(err.Error(), "topics nope not found after waiting") {
		t.Fatalf("a topic no broker lists: %v; want a MissingTopicsError naming nope", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("gave up after %s, before the 200ms wait", took)
	}
	if _, err := kafka.AwaitTopics(context.Background(), cl, []string{"nope"}, kafka.TopicWait{Max: -1}); !errors.As(err, &me) {
		t.Errorf("Max -1 (look once): %v", err)
	}
}
