package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestUnknownSubcommand: every group of commands refuses a subcommand it
// does not have, with exit 2 and the closest one, instead of printing its
// help and exiting 0.
func TestUnknownSubcommand(t *testing.T) {
	ctx := context.Background()
	root := newRootCmd()
	var groups int
	for _, c := range root.Commands() {
		if !c.HasSubCommands() {
			continue
		}
		groups++
		sub := c.Commands()[0].Name()
		typo := sub[:len(sub)-1] // "plan" -> "pla"
		_, errs, code := dlqTestRun(t, ctx, c.Name(), typo, "extra-arg", "--some-flag", "1")
		if code != exitUsage || !strings.Contains(errs, `unknown command "`+typo+`" for "troupe `+c.Name()+`" (did you mean `+sub) {
			t.Errorf("troupe %s %s: exit %d, want 2 and a did-you-mean for %s; stderr:\n%s", c.Name(), typo, code, sub, errs)
		}
		out, _, code := dlqTestRun(t, ctx, c.Name())
		if code != exitOK || !strings.Contains(out, "Available Commands") {
			t.Errorf("troupe %s: exit %d, want 0 and its help:\n%s", c.Name(), code, out)
		}
	}
	if groups < 6 {
		t.Errorf("found %d command groups, want topics, schemas, dlq, saga, state, topology at least", groups)
	}
	_, errs, code := dlqTestRun(t, ctx, "topics", "creat", "orders-audit")
	if code != exitUsage || !strings.Contains(errs, "did you mean create?") || !strings.Contains(errs, "apply, create, plan") {
		t.Errorf("troupe topics creat: exit %d\n%s", code, errs)
	}
}

func TestTopicsCreateAndReplayTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 8, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 16 {
		recs = append(recs, &kgo.Record{Topic: "orders", Partition: int32(i % 8), Key: []byte{byte('a' + i)}, Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	expect := func(wantCode int, want []string, args ...string) string {
		t.Helper()
		out, errs, code := dlqTestRun(t, ctx, append(args, "--brokers", broker)...)
		if code != wantCode {
			t.Fatalf("troupe %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(out+errs, w) {
				t.Errorf("troupe %s: output does not mention %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, out, errs)
			}
		}
		return out
	}
	partitions := func(topic string) int {
		t.Helper()
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return len(td[topic].Partitions)
	}

	// The runbook's copy into a topic that does not exist says how to
	// create it.
	expect(exitUsage, []string{"target orders-audit: topic does not exist", "troupe topics create orders-audit --partitions 8", "or add --create"},
		"replay", "--topic", "orders", "--from-offset", "0", "--to-topic", "orders-audit")

	expect(exitUsage, []string{"orders is a topic of", "troupe topics apply"}, "topics", "create", "orders", "--topology", testTopology)
	expect(exitUsage, []string{`"bad name" is not a valid topic name`}, "topics", "create", "bad name")
	expect(exitUsage, []string{`--config "retention" is not KEY=VALUE`}, "topics", "create", "x", "--config", "retention")
	expect(exitUsage, []string{"topics create needs the topic's NAME"}, "topics", "create")
	// The partitions default to the topology's (8 in the example).
	expect(exitOK, []string{"created topic orders-audit with 8 partitions (retention.ms=86400000)"},
		"topics", "create", "orders-audit", "--topology", testTopology, "--config", "retention.ms=86400000")
	if n := partitions("orders-audit"); n != 8 {
		t.Errorf("orders-audit has %d partitions, want 8", n)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "orders-audit")
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := rcs.On("orders-audit", nil); err != nil || !hasConfig(rc.Configs, "retention.ms", "86400000") {
		t.Errorf("orders-audit configs %+v, %v: want retention.ms=86400000", rc.Configs, err)
	}
	expect(exitUsage, []string{"topic orders-audit exists already, with 8 partitions (add --if-not-exists"}, "topics", "create", "orders-audit")
	expect(exitOK, []string{"exists already (8 partitions); nothing done"}, "topics", "create", "orders-audit", "--if-not-exists")
	expect(exitOK, []string{"created topic scratch with 3 partitions"}, "topics", "create", "scratch", "--partitions", "3", "--topology", testTopology)

	expect(exitOK, []string{"copied 16 records", "kept their partition numbers"}, "replay", "--topic", "orders", "--from-offset", "0", "--to-topic", "orders-audit")

	// --create makes the target with the source's partition count.
	expect(exitOK, []string{"created orders-copy with 8 partitions, as orders has", "copied 16 records", "kept their partition numbers"},
		"replay", "--topic", "orders", "--from-offset", "0", "--to-topic", "orders-copy", "--create")
	if n := partitions("orders-copy"); n != 8 {
		t.Errorf("orders-copy has %d partitions, want 8", n)
	}
	expect(exitUsage, []string{"--create goes with --to-topic"}, "replay", "--topic", "orders", "--from-offset", "0", "--group", "g", "--create")
	expect(exitUsage, []string{"nope: topic does not exist"}, "replay", "--topic", "nope", "--from-offset", "0", "--to-topic", "orders-copy", "--create")
}

func hasConfig(cs []kadm.Config, k, v string) bool {
	for _, c := range cs {
		if c.Key == k && c.Value != nil && *c.Value == v {
			return true
		}
	}
	return false
}
